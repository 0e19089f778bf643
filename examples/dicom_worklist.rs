//! A Modality Worklist query: what is scheduled for a CT today? Prints each match as DICOM JSON.
//!
//! `cargo run -p outpost-examples --example dicom_worklist [HOST:PORT] [CALLED-AE]`
//! (for instance against dcmtk's `wlmscpfs`).

use dicom_net::{Association, DataSet, Options, Proposal, uids};

#[tokio::main]
async fn main() -> Result<(), dicom_net::Error> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:11112".into());
    let called_ae = args.next().unwrap_or_else(|| "WLSCP".into());
    let mut query = DataSet::default();
    for key in [
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "ScheduledProcedureStepSequence[0].Modality=CT",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    ] {
        query.set_key(key)?;
    }
    let opts = Options {
        called_ae,
        ..Options::default()
    };
    let model = uids::MODALITY_WORKLIST_FIND;
    let mut assoc = Association::connect(&addr, &opts, &[Proposal::find(model)]).await?;
    let mut find = assoc.find(model, &query).await?;
    while let Some(item) = find.next().await? {
        println!("{}", dicom_net::to_json(&item));
    }
    if let Some(end) = find.end() {
        eprintln!("{}", end.status);
    }
    assoc.release().await
}
