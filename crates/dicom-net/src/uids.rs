//! UIDs this crate uses.

/// DICOM application context.
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Implicit VR Little Endian, the default transfer syntax every SCP accepts.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (retired).
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// Patient Root Query/Retrieve Information Model - FIND.
pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
/// Study Root Query/Retrieve Information Model - FIND.
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Modality Worklist Information Model - FIND.
pub const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";
/// This implementation: a UID under the `2.25` (UUID-derived) root.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.285398746180152618312745109389213654001";
/// This implementation's version name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "OUTPOST_010";

/// Which transfer syntaxes this crate can read and write element by element (and so transcode
/// between): `Some(explicit)` for the two uncompressed little-endian ones.
pub fn uncompressed_le(ts: &str) -> Option<bool> {
    match ts {
        IMPLICIT_VR_LE => Some(false),
        EXPLICIT_VR_LE => Some(true),
        _ => None,
    }
}
