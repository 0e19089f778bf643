//! UIDs this crate uses, and what each transfer syntax means for the bytes of a data set
//! (PS3.5 §10 and Annex A).

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

/// How the elements of a data set are laid out: whether VRs are on the wire, and the byte
/// order of numbers (PS3.5 §7.1, §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoding {
    /// Explicit VR (else implicit: the VR comes from the data dictionary).
    pub explicit: bool,
    /// Big endian (only with explicit VR: Explicit VR Big Endian).
    pub big_endian: bool,
}

impl Encoding {
    /// Implicit VR Little Endian.
    pub const IMPLICIT_LE: Encoding = Encoding {
        explicit: false,
        big_endian: false,
    };
    /// Explicit VR Little Endian (also the encoding of every encapsulated syntax's data set).
    pub const EXPLICIT_LE: Encoding = Encoding {
        explicit: true,
        big_endian: false,
    };
    /// Explicit VR Big Endian.
    pub const EXPLICIT_BE: Encoding = Encoding {
        explicit: true,
        big_endian: true,
    };

    /// The uncompressed transfer syntax with this encoding.
    pub fn transfer_syntax(self) -> &'static str {
        match (self.explicit, self.big_endian) {
            (false, _) => IMPLICIT_VR_LE,
            (true, false) => EXPLICIT_VR_LE,
            (true, true) => EXPLICIT_VR_BE,
        }
    }
}

/// What a transfer syntax means for the data set's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// How elements are encoded (after inflating, for Deflate).
    pub encoding: Encoding,
    /// The whole data set is a raw deflate stream (RFC 1951, PS3.5 §A.5).
    pub deflated: bool,
    /// Pixel data is encapsulated (compressed); it is never converted, only sent as it is.
    pub encapsulated: bool,
}

impl Syntax {
    /// Whether this crate can rewrite the data set into another syntax without loss:
    /// the uncompressed syntaxes and Deflate.
    pub fn convertible(self) -> bool {
        !self.encapsulated
    }
}

/// What `uid` means for the bytes. Syntaxes this crate does not know are taken as Explicit VR
/// Little Endian with encapsulated pixel data (every compressed syntax is), so they are only
/// ever sent as they are.
pub fn syntax(uid: &str) -> Syntax {
    let plain = |encoding| Syntax {
        encoding,
        deflated: false,
        encapsulated: false,
    };
    match uid {
        IMPLICIT_VR_LE => plain(Encoding::IMPLICIT_LE),
        EXPLICIT_VR_LE => plain(Encoding::EXPLICIT_LE),
        EXPLICIT_VR_BE => plain(Encoding::EXPLICIT_BE),
        DEFLATED_EXPLICIT_VR_LE => Syntax {
            encoding: Encoding::EXPLICIT_LE,
            deflated: true,
            encapsulated: false,
        },
        _ => Syntax {
            encoding: Encoding::EXPLICIT_LE,
            deflated: false,
            encapsulated: true,
        },
    }
}

/// A transfer syntax's name from PS3.6 Annex A, with its UID: `Explicit VR Big Endian
/// (1.2.840.10008.1.2.2)`; the UID alone when this crate does not know its name.
pub fn transfer_syntax_name(uid: &str) -> String {
    let name = match uid {
        IMPLICIT_VR_LE => "Implicit VR Little Endian",
        EXPLICIT_VR_LE => "Explicit VR Little Endian",
        DEFLATED_EXPLICIT_VR_LE => "Deflated Explicit VR Little Endian",
        EXPLICIT_VR_BE => "Explicit VR Big Endian",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline (Process 1)",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended (Process 2 & 4)",
        "1.2.840.10008.1.2.4.57" => "JPEG Lossless, Non-Hierarchical (Process 14)",
        "1.2.840.10008.1.2.4.70" => "JPEG Lossless, First-Order Prediction (Process 14 SV1)",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 (Lossless Only)",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.100" => "MPEG2 Main Profile / Main Level",
        "1.2.840.10008.1.2.4.102" => "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        "1.2.840.10008.1.2.4.201" => "High-Throughput JPEG 2000 (Lossless Only)",
        "1.2.840.10008.1.2.4.203" => "High-Throughput JPEG 2000",
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        _ => return uid.to_owned(),
    };
    format!("{name} ({uid})")
}

/// Which transfer syntaxes this crate can read and write element by element (and so transcode
/// between): `Some(explicit)` for the two uncompressed little-endian ones.
pub fn uncompressed_le(ts: &str) -> Option<bool> {
    match ts {
        IMPLICIT_VR_LE => Some(false),
        EXPLICIT_VR_LE => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntaxes() {
        assert!(syntax(DEFLATED_EXPLICIT_VR_LE).deflated);
        assert!(syntax(DEFLATED_EXPLICIT_VR_LE).convertible());
        assert_eq!(syntax(EXPLICIT_VR_BE).encoding, Encoding::EXPLICIT_BE);
        assert!(!syntax("1.2.840.10008.1.2.4.50").convertible());
        assert!(syntax("1.2.3.4").encapsulated);
        assert_eq!(
            transfer_syntax_name(EXPLICIT_VR_BE),
            "Explicit VR Big Endian (1.2.840.10008.1.2.2)"
        );
        assert_eq!(Encoding::IMPLICIT_LE.transfer_syntax(), IMPLICIT_VR_LE);
    }
}
