//! A compact data dictionary: the attributes queries, worklists and images commonly carry
//! (PS3.6), for keyword lookup, implicit-VR reading and JSON. Tags not here read as `UN`.

/// (tag, keyword, VR)
const ENTRIES: &[(u32, &str, &str)] = &[
    (0x0008_0005, "SpecificCharacterSet", "CS"),
    (0x0008_0008, "ImageType", "CS"),
    (0x0008_0012, "InstanceCreationDate", "DA"),
    (0x0008_0013, "InstanceCreationTime", "TM"),
    (0x0008_0016, "SOPClassUID", "UI"),
    (0x0008_0018, "SOPInstanceUID", "UI"),
    (0x0008_0020, "StudyDate", "DA"),
    (0x0008_0021, "SeriesDate", "DA"),
    (0x0008_0022, "AcquisitionDate", "DA"),
    (0x0008_0023, "ContentDate", "DA"),
    (0x0008_0030, "StudyTime", "TM"),
    (0x0008_0031, "SeriesTime", "TM"),
    (0x0008_0032, "AcquisitionTime", "TM"),
    (0x0008_0033, "ContentTime", "TM"),
    (0x0008_0050, "AccessionNumber", "SH"),
    (0x0008_0052, "QueryRetrieveLevel", "CS"),
    (0x0008_0054, "RetrieveAETitle", "AE"),
    (0x0008_0056, "InstanceAvailability", "CS"),
    (0x0008_0060, "Modality", "CS"),
    (0x0008_0061, "ModalitiesInStudy", "CS"),
    (0x0008_0062, "SOPClassesInStudy", "UI"),
    (0x0008_0070, "Manufacturer", "LO"),
    (0x0008_0080, "InstitutionName", "LO"),
    (0x0008_0090, "ReferringPhysicianName", "PN"),
    (0x0008_0100, "CodeValue", "SH"),
    (0x0008_0102, "CodingSchemeDesignator", "SH"),
    (0x0008_0103, "CodingSchemeVersion", "SH"),
    (0x0008_0104, "CodeMeaning", "LO"),
    (0x0008_0201, "TimezoneOffsetFromUTC", "SH"),
    (0x0008_1010, "StationName", "SH"),
    (0x0008_1030, "StudyDescription", "LO"),
    (0x0008_103E, "SeriesDescription", "LO"),
    (0x0008_1040, "InstitutionalDepartmentName", "LO"),
    (0x0008_1050, "PerformingPhysicianName", "PN"),
    (0x0008_1070, "OperatorsName", "PN"),
    (0x0008_1090, "ManufacturerModelName", "LO"),
    (0x0008_1110, "ReferencedStudySequence", "SQ"),
    (
        0x0008_1111,
        "ReferencedPerformedProcedureStepSequence",
        "SQ",
    ),
    (0x0008_1115, "ReferencedSeriesSequence", "SQ"),
    (0x0008_1120, "ReferencedPatientSequence", "SQ"),
    (0x0008_1140, "ReferencedImageSequence", "SQ"),
    (0x0008_1150, "ReferencedSOPClassUID", "UI"),
    (0x0008_1155, "ReferencedSOPInstanceUID", "UI"),
    (0x0010_0010, "PatientName", "PN"),
    (0x0010_0020, "PatientID", "LO"),
    (0x0010_0021, "IssuerOfPatientID", "LO"),
    (0x0010_0030, "PatientBirthDate", "DA"),
    (0x0010_0032, "PatientBirthTime", "TM"),
    (0x0010_0040, "PatientSex", "CS"),
    (0x0010_1000, "OtherPatientIDs", "LO"),
    (0x0010_1001, "OtherPatientNames", "PN"),
    (0x0010_1010, "PatientAge", "AS"),
    (0x0010_1020, "PatientSize", "DS"),
    (0x0010_1030, "PatientWeight", "DS"),
    (0x0010_1040, "PatientAddress", "LO"),
    (0x0010_2000, "MedicalAlerts", "LO"),
    (0x0010_2110, "Allergies", "LO"),
    (0x0010_2154, "PatientTelephoneNumbers", "SH"),
    (0x0010_2160, "EthnicGroup", "SH"),
    (0x0010_21C0, "PregnancyStatus", "US"),
    (0x0010_4000, "PatientComments", "LT"),
    (0x0018_0015, "BodyPartExamined", "CS"),
    (0x0018_0050, "SliceThickness", "DS"),
    (0x0018_0060, "KVP", "DS"),
    (0x0018_1030, "ProtocolName", "LO"),
    (0x0018_5100, "PatientPosition", "CS"),
    (0x0020_000D, "StudyInstanceUID", "UI"),
    (0x0020_000E, "SeriesInstanceUID", "UI"),
    (0x0020_0010, "StudyID", "SH"),
    (0x0020_0011, "SeriesNumber", "IS"),
    (0x0020_0012, "AcquisitionNumber", "IS"),
    (0x0020_0013, "InstanceNumber", "IS"),
    (0x0020_0020, "PatientOrientation", "CS"),
    (0x0020_0032, "ImagePositionPatient", "DS"),
    (0x0020_0037, "ImageOrientationPatient", "DS"),
    (0x0020_0052, "FrameOfReferenceUID", "UI"),
    (0x0020_1200, "NumberOfPatientRelatedStudies", "IS"),
    (0x0020_1202, "NumberOfPatientRelatedSeries", "IS"),
    (0x0020_1204, "NumberOfPatientRelatedInstances", "IS"),
    (0x0020_1206, "NumberOfStudyRelatedSeries", "IS"),
    (0x0020_1208, "NumberOfStudyRelatedInstances", "IS"),
    (0x0020_1209, "NumberOfSeriesRelatedInstances", "IS"),
    (0x0020_4000, "ImageComments", "LT"),
    (0x0028_0002, "SamplesPerPixel", "US"),
    (0x0028_0004, "PhotometricInterpretation", "CS"),
    (0x0028_0006, "PlanarConfiguration", "US"),
    (0x0028_0008, "NumberOfFrames", "IS"),
    (0x0028_0010, "Rows", "US"),
    (0x0028_0011, "Columns", "US"),
    (0x0028_0030, "PixelSpacing", "DS"),
    (0x0028_0100, "BitsAllocated", "US"),
    (0x0028_0101, "BitsStored", "US"),
    (0x0028_0102, "HighBit", "US"),
    (0x0028_0103, "PixelRepresentation", "US"),
    (0x0028_1050, "WindowCenter", "DS"),
    (0x0028_1051, "WindowWidth", "DS"),
    (0x0028_1052, "RescaleIntercept", "DS"),
    (0x0028_1053, "RescaleSlope", "DS"),
    (0x0032_1032, "RequestingPhysician", "PN"),
    (0x0032_1060, "RequestedProcedureDescription", "LO"),
    (0x0032_1064, "RequestedProcedureCodeSequence", "SQ"),
    (0x0038_0010, "AdmissionID", "LO"),
    (0x0038_0300, "CurrentPatientLocation", "LO"),
    (0x0040_0001, "ScheduledStationAETitle", "AE"),
    (0x0040_0002, "ScheduledProcedureStepStartDate", "DA"),
    (0x0040_0003, "ScheduledProcedureStepStartTime", "TM"),
    (0x0040_0004, "ScheduledProcedureStepEndDate", "DA"),
    (0x0040_0005, "ScheduledProcedureStepEndTime", "TM"),
    (0x0040_0006, "ScheduledPerformingPhysicianName", "PN"),
    (0x0040_0007, "ScheduledProcedureStepDescription", "LO"),
    (0x0040_0008, "ScheduledProtocolCodeSequence", "SQ"),
    (0x0040_0009, "ScheduledProcedureStepID", "SH"),
    (0x0040_0010, "ScheduledStationName", "SH"),
    (0x0040_0011, "ScheduledProcedureStepLocation", "SH"),
    (0x0040_0012, "PreMedication", "LO"),
    (0x0040_0020, "ScheduledProcedureStepStatus", "CS"),
    (0x0040_0100, "ScheduledProcedureStepSequence", "SQ"),
    (0x0040_1001, "RequestedProcedureID", "SH"),
    (0x0040_1002, "ReasonForTheRequestedProcedure", "LO"),
    (0x0040_1003, "RequestedProcedurePriority", "SH"),
    (0x0040_1004, "PatientTransportArrangements", "LO"),
    (0x0040_2016, "PlacerOrderNumberImagingServiceRequest", "LO"),
    (0x0040_2017, "FillerOrderNumberImagingServiceRequest", "LO"),
    (0x0040_2400, "ImagingServiceRequestComments", "LT"),
    (0x0040_A010, "RelationshipType", "CS"),
    (0x0040_A040, "ValueType", "CS"),
    (0x0040_A043, "ConceptNameCodeSequence", "SQ"),
    (0x0040_A160, "TextValue", "UT"),
    (0x0040_A168, "ConceptCodeSequence", "SQ"),
    (0x0040_A30A, "NumericValue", "DS"),
    (0x0040_A730, "ContentSequence", "SQ"),
    (0x7FE0_0010, "PixelData", "OW"),
];

/// The VR of a tag: from the dictionary, `UL` for group lengths, `UN` otherwise.
pub fn vr_of(tag: u32) -> [u8; 2] {
    if tag & 0xFFFF == 0 {
        return *b"UL";
    }
    ENTRIES
        .binary_search_by_key(&tag, |e| e.0)
        .ok()
        .map_or(*b"UN", |i| {
            let vr = ENTRIES[i].2;
            let b = vr.as_bytes();
            [b[0], b[1]]
        })
}

/// A tag by keyword (`PatientName`).
pub fn tag_of(keyword: &str) -> Option<u32> {
    ENTRIES
        .iter()
        .find(|(_, k, _)| *k == keyword)
        .map(|(t, _, _)| *t)
}

/// A tag's keyword, if the dictionary has it.
pub fn keyword_of(tag: u32) -> Option<&'static str> {
    ENTRIES
        .iter()
        .find(|(t, _, _)| *t == tag)
        .map(|(_, k, _)| *k)
}

/// Every entry (for checking the table against another dictionary).
pub fn entries() -> impl Iterator<Item = (u32, &'static str, &'static str)> {
    ENTRIES.iter().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_two_letter_vrs() {
        assert!(
            ENTRIES.windows(2).all(|w| w[0].0 < w[1].0),
            "ENTRIES must be sorted by tag"
        );
        assert!(ENTRIES.iter().all(|e| e.2.len() == 2));
        assert_eq!(vr_of(0x0040_0100), *b"SQ");
        assert_eq!(vr_of(0x0010_0000), *b"UL");
        assert_eq!(vr_of(0x0009_0010), *b"UN");
        assert_eq!(tag_of("ReferencedImageSequence"), Some(0x0008_1140));
        assert_eq!(keyword_of(0x0010_0010), Some("PatientName"));
    }
}
