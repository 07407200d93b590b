//! SWA candidates and augmented IDX data through `trainer sms`: a soup
//! candidate delivered as the average of its iterates keeps the parent's
//! mask, differs from the last iterate, and `trainer eval` reproduces its
//! reported accuracy.

use super::*;

fn masks(ck: &Checkpoint) -> Vec<Vec<bool>> {
    prunable(ck)
        .iter()
        .map(|n| f32s(ck, n).iter().map(|w| *w == 0.0).collect())
        .collect()
}

#[test]
fn swa_candidates_keep_the_mask_and_reevaluate_to_their_numbers() {
    let (dir, data) = scratch_with_data();
    let (plain, swa) = (dir.path().join("plain"), dir.path().join("swa"));
    let base = [
        "--phases",
        "1",
        "--candidates",
        "2",
        "--corruptions",
        "none",
        "--augment",
        "crop-flip",
    ];
    run_sms(&data, &plain, &base);
    let mut with = base.to_vec();
    with.extend(["--swa-from", "0.5", "--swa-every", "2"]);
    run_sms(&data, &swa, &with);
    let config = std::fs::read_to_string(swa.join("config.toml")).unwrap();
    for key in ["augment = \"crop-flip\"", "swa_from = 0.5", "swa_every = 2"] {
        assert!(config.contains(key), "{key} not in\n{config}");
    }
    let report = json(&swa.join("report.json"));
    let parent = Checkpoint::open(swa.join("phase-1/parent.safetensors")).unwrap();
    for m in report["phases"][0]["models"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        if !name.starts_with("candidate-") {
            continue;
        }
        let ck = m["checkpoint"].as_str().unwrap();
        let averaged = Checkpoint::open(swa.join(ck)).unwrap();
        let last = Checkpoint::open(plain.join(ck)).unwrap();
        // The same pruned weights are exactly zero, and no others.
        assert_eq!(masks(&averaged), masks(&parent), "{name}");
        // Same seed and batches: the average is not the last iterate.
        let names = prunable(&averaged);
        assert!(
            names.iter().any(|n| f32s(&averaged, n) != f32s(&last, n)),
            "{name}"
        );
        let o = trainer()
            .args(["eval", "--model", "cnn", "--device", "cpu", "--json"])
            .arg("--data")
            .arg(&data)
            .arg("--checkpoint")
            .arg(swa.join(ck))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ev["top1"], m["test_acc"], "{name}");
    }
}
