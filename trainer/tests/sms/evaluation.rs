//! The one evaluation path: every reported number is reproduced by
//! evaluating the checkpoint saved for it.

use super::*;

#[test]
fn every_reported_model_is_recalibrated_saved_and_reevaluates_to_its_numbers() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(
        &data,
        &run,
        &[
            "--phases",
            "1",
            "--candidates",
            "2",
            "--baselines",
            "imp,imp-long,reprune",
        ],
    );
    let report = json(&run.join("report.json"));
    let row = &report["phases"][0];
    let mut models: Vec<serde_json::Value> = row["models"].as_array().unwrap().clone();
    models.push(report["dense"].clone());
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "soup",
            "candidate-0",
            "candidate-1",
            "ensemble",
            "imp",
            "imp-long",
            "reprune",
            "dense"
        ]
    );
    let s = session(&run);
    for m in &models {
        let name = m["name"].as_str().unwrap();
        for key in [
            "test_acc",
            "val_acc",
            "balanced_acc",
            "worst_class_acc",
            "ece",
            "mce",
        ] {
            assert!(m[key].is_number(), "{name} lacks {key}");
        }
        // Robustness is evaluated by default (every corruption, severity 3).
        assert!(m["ood_acc"].is_number(), "{name} lacks ood_acc");
        let Some(ck) = m["checkpoint"].as_str() else {
            assert_eq!(name, "ensemble");
            continue;
        };
        let path = run.join(ck);
        // The saved checkpoint is the recalibrated model: recalibrating it
        // again (same procedure, same batches) changes no statistic.
        let model = s.load(&path).unwrap();
        let before = model.state_dict();
        let before: Vec<(String, Vec<f32>)> = before
            .iter()
            .filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
            .map(|(n, t)| (n.clone(), Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()))
            .collect();
        assert!(!before.is_empty());
        let e = s.evaluate(&model).unwrap();
        s.recalibrate(&model);
        let sd = model.state_dict();
        for (n, v) in &before {
            let after = Vec::<f32>::try_from(&sd[n].flatten(0, -1)).unwrap();
            assert_eq!(&after, v, "{name}: {n} was not the recalibrated statistic");
        }
        // Evaluating the file reproduces the report's numbers exactly.
        assert_eq!(e.test.top1, m["test_acc"].as_f64().unwrap(), "{name}");
        assert_eq!(e.val.top1, m["val_acc"].as_f64().unwrap(), "{name}");
        assert_eq!(
            e.test.worst_class_accuracy,
            m["worst_class_acc"].as_f64().unwrap()
        );
        assert!(
            (e.test.mce - m["mce"].as_f64().unwrap()).abs() < 1e-12,
            "{name}"
        );
        assert_eq!(e.sparsity, m["sparsity"].as_f64().unwrap(), "{name}");
        // And so does `trainer eval` on it.
        let o = trainer()
            .args([
                "eval",
                "--model",
                "cnn",
                "--device",
                "cpu",
                "--json",
                "--batch-size",
                "500",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line = String::from_utf8_lossy(&o.stdout);
        let ev: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(
            ev["top1"].as_f64().unwrap(),
            m["test_acc"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(ev["ood_acc"], m["ood_acc"], "{name}");
    }
    // Per-layer sparsity of the soup: every prunable tensor, the parent's
    // zeros.
    let soup = Checkpoint::open(run.join(models[0]["checkpoint"].as_str().unwrap())).unwrap();
    let layers = models[0]["layer_sparsity"].as_object().unwrap();
    assert_eq!(layers.len(), prunable(&soup).len());
    for name in prunable(&soup) {
        let (z, n) = zeros_over(&soup, std::slice::from_ref(&name));
        assert_eq!(
            layers[&name].as_f64().unwrap(),
            z as f64 / n as f64,
            "{name}"
        );
    }
    let flops = row["flops_ratio"].as_f64().unwrap();
    assert!(flops > 0.0 && flops < 1.0, "{flops}");
    // The candidates' geometry: their paths, and the L2 distance between
    // them computed directly over every float tensor in f64.
    let geometry = &row["geometry"];
    assert_eq!(
        geometry["inputs"],
        serde_json::json!([
            "phase-1/candidate-0.safetensors",
            "phase-1/candidate-1.safetensors"
        ])
    );
    let (a, b) = (
        Checkpoint::open(run.join("phase-1/candidate-0.safetensors")).unwrap(),
        Checkpoint::open(run.join("phase-1/candidate-1.safetensors")).unwrap(),
    );
    let mut sq = 0.0f64;
    for t in a
        .tensors()
        .iter()
        .filter(|t| t.dtype == soup_core::Dtype::F32)
    {
        for (x, y) in f32s(&a, &t.name).iter().zip(f32s(&b, &t.name)) {
            sq += (f64::from(*x) - f64::from(y)).powi(2);
        }
    }
    let l2 = geometry["l2"][0][1].as_f64().unwrap();
    assert!(
        sq > 0.0 && (l2 - sq.sqrt()).abs() <= 1e-9 * sq.sqrt(),
        "{l2} vs {}",
        sq.sqrt()
    );
    assert_eq!(geometry["l2"][1][0], geometry["l2"][0][1]);
    assert_eq!(geometry["l2"][0][0].as_f64(), Some(0.0));

    // The ensemble's accuracy, computed directly: mean of the candidates'
    // softmax outputs over the test split.
    let cands: Vec<trainer::Model> = (0..2)
        .map(|i| {
            s.load(&run.join(format!("phase-1/candidate-{i}.safetensors")))
                .unwrap()
        })
        .collect();
    let (mut correct, mut total) = (0usize, 0usize);
    for b in s
        .data
        .eval_batches(trainer::Split::Test, 37, tch::Device::Cpu)
    {
        let probs = tch::no_grad(|| {
            cands
                .iter()
                .map(|m| {
                    m.forward(&b.images, trainer::Mode::Eval)
                        .softmax(-1, tch::Kind::Float)
                })
                .reduce(|a, c| a + c)
                .unwrap()
        });
        let pred = Vec::<i64>::try_from(&probs.argmax(-1, false)).unwrap();
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
        total += labels.len();
    }
    let ensemble = models.iter().find(|m| m["name"] == "ensemble").unwrap();
    assert_eq!(
        ensemble["test_acc"].as_f64().unwrap(),
        correct as f64 / total as f64
    );
    assert_eq!(row["ensemble_test_acc"], ensemble["test_acc"]);
}
