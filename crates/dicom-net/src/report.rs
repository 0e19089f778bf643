//! What an SCU reports to whoever asked: the C-FIND information model for a query, and the
//! outcome of a C-STORE or a C-FIND as JSON (the shapes the Outpost agent answers a push with).

use serde_json::Value as Json;

use crate::{DataSet, Status, to_json, uids};

/// Query/Retrieve Level (0008,0052).
const QUERY_RETRIEVE_LEVEL: u32 = 0x0008_0052;

/// Which C-FIND information model a query is asked in, named (`patient`, `study`, `worklist`)
/// or left to the identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindModel {
    /// Patient Root Query/Retrieve (PS3.4 §C.6.1).
    PatientRoot,
    /// Study Root Query/Retrieve (PS3.4 §C.6.2).
    StudyRoot,
    /// Modality Worklist (PS3.4 §K.6).
    ModalityWorklist,
}

/// A model name that is not `patient`, `study` or `worklist`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model={0}: expected patient, study or worklist")]
pub struct UnknownModel(pub String);

impl FindModel {
    /// The model `name` asks for (`patient`, `study`, `worklist`); without a name, the one the
    /// identifier implies: Query/Retrieve Level `PATIENT` is Patient Root, another level Study
    /// Root, no level Modality Worklist.
    ///
    /// # Errors
    ///
    /// [`UnknownModel`] for any other name.
    pub fn choose(name: Option<&str>, identifier: &DataSet) -> Result<FindModel, UnknownModel> {
        match name {
            Some("patient") => Ok(FindModel::PatientRoot),
            Some("study") => Ok(FindModel::StudyRoot),
            Some("worklist") => Ok(FindModel::ModalityWorklist),
            Some(other) => Err(UnknownModel(other.to_owned())),
            None => Ok(match identifier.string(QUERY_RETRIEVE_LEVEL).as_deref() {
                Some("PATIENT") => FindModel::PatientRoot,
                Some(_) => FindModel::StudyRoot,
                None => FindModel::ModalityWorklist,
            }),
        }
    }

    /// The SOP class UID of the model's FIND.
    pub fn sop_class(self) -> &'static str {
        match self {
            FindModel::PatientRoot => uids::PATIENT_ROOT_FIND,
            FindModel::StudyRoot => uids::STUDY_ROOT_FIND,
            FindModel::ModalityWorklist => uids::MODALITY_WORKLIST_FIND,
        }
    }
}

/// A C-STORE outcome as JSON: `{status: "0x0000", statusText, sopClassUid, sopInstanceUid,
/// transferSyntaxUid, transcoded, bytes}`.
#[cfg(feature = "tokio")]
pub fn store_json(r: &crate::StoreResult) -> Json {
    serde_json::json!({
        "status": status_hex(r.status),
        "statusText": r.status.name(),
        "sopClassUid": r.sop_class,
        "sopInstanceUid": r.sop_instance,
        "transferSyntaxUid": r.transfer_syntax,
        "transcoded": r.transcoded,
        "bytes": r.bytes,
    })
}

/// C-FIND matches as a JSON array of DICOM JSON data sets (PS3.18 §F.2).
pub fn matches_json(matches: &[DataSet]) -> Json {
    Json::Array(matches.iter().map(to_json).collect())
}

/// `0xXXXX`, the way statuses are written in PS3.7 annex C.
pub fn status_hex(status: Status) -> String {
    format!("0x{:04X}", status.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dict;

    #[test]
    fn model_from_name_or_level() {
        let mut q = DataSet::default();
        assert_eq!(FindModel::choose(None, &q), Ok(FindModel::ModalityWorklist));
        q.set_text(dict::tag_of("QueryRetrieveLevel").unwrap(), "PATIENT");
        assert_eq!(FindModel::choose(None, &q), Ok(FindModel::PatientRoot));
        q.set_text(dict::tag_of("QueryRetrieveLevel").unwrap(), "SERIES");
        assert_eq!(FindModel::choose(None, &q), Ok(FindModel::StudyRoot));
        assert_eq!(
            FindModel::choose(Some("worklist"), &q).map(FindModel::sop_class),
            Ok(uids::MODALITY_WORKLIST_FIND)
        );
        assert_eq!(
            FindModel::choose(Some("series"), &q)
                .unwrap_err()
                .to_string(),
            "model=series: expected patient, study or worklist"
        );
        assert_eq!(status_hex(Status(0xA700)), "0xA700");
        assert_eq!(matches_json(&[]), serde_json::json!([]));
    }
}
