//! Tests of robustness evaluation: corrupted batches, specs and reports.

use super::*;

#[test]
fn flags_parse_into_specs() {
    let spec = OodArgs::default().spec().unwrap();
    assert_eq!(spec, OodSpec::default());
    assert_eq!(spec.severities, vec![3]);
    let a = OodArgs {
        corruptions: Some("fog, contrast".into()),
        severity: Some("5,1".into()),
        ..OodArgs::default()
    };
    let spec = a.spec().unwrap();
    assert_eq!(
        spec.corruptions,
        CorruptionChoice::Named(vec!["fog".into(), "contrast".into()])
    );
    assert_eq!(spec.severities, vec![1, 5]);
    assert_eq!(parse_severities("all").unwrap(), vec![1, 2, 3, 4, 5]);
    let none = OodArgs {
        corruptions: Some("none".into()),
        ..OodArgs::default()
    };
    assert!(none.spec().unwrap().is_none());
    assert!(OodSpec::none().is_none() && !OodSpec::default().is_none());
}

#[test]
fn bad_flags_are_structured_errors() {
    let sev = |s: &str| OodArgs {
        severity: Some(s.into()),
        ..OodArgs::default()
    };
    for bad in ["0", "6", "x", "3,"] {
        assert!(
            matches!(sev(bad).spec(), Err(Error::BadSeverity(_))),
            "{bad}"
        );
    }
    let frost = OodArgs {
        corruptions: Some("fog,frost".into()),
        ..OodArgs::default()
    };
    assert!(matches!(frost.spec(), Err(Error::UnknownCorruption(n)) if n == "frost"));
    // With a folder, names are file names: checked when the folder is read.
    let folder = OodArgs {
        ood: Some("/nowhere".into()),
        ..frost
    };
    assert!(folder.spec().is_ok());
}

#[test]
fn spec_round_trips_through_toml() {
    let spec = OodArgs {
        corruptions: Some("fog".into()),
        severity: Some("all".into()),
        ood_limit: Some(100),
        ..OodArgs::default()
    }
    .spec()
    .unwrap();
    let text = toml::to_string(&spec).unwrap();
    assert_eq!(toml::from_str::<OodSpec>(&text).unwrap(), spec);
    let none = toml::to_string(&OodSpec::none()).unwrap();
    // A report survives JSON on its own and inside EvalSummary.
    let report = OodReport {
        test_acc: 0.5,
        ood_acc: Some(0.25),
        corruptions: BTreeMap::from([("fog".to_string(), BTreeMap::from([(3u8, 0.25)]))]),
    };
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<OodReport>(&json).unwrap(), report);
    let summary = EvalSummary {
        test: EvalReport {
            samples: 4,
            loss: 1.0,
            top1: 0.5,
            balanced_accuracy: 0.5,
            worst_class_accuracy: 0.5,
            ece: 0.1,
            mce: 0.1,
        },
        ood: report,
    };
    let json = serde_json::to_string(&summary).unwrap();
    assert_eq!(serde_json::from_str::<EvalSummary>(&json).unwrap(), summary);
    assert_eq!(toml::from_str::<OodSpec>(&none).unwrap(), OodSpec::none());
}

/// A small grey data set of random images.
fn tiny(n_test: usize) -> Dataset {
    let mut rng = crate::rng::Rng::new(11, 0);
    let mut set = |n: usize| crate::data::ImageSet {
        images: (0..n * 100).map(|_| rng.below(256) as u8).collect(),
        labels: (0..n as i64).map(|i| i % 3).collect(),
        shape: [1, 10, 10],
    };
    let (train, test) = (set(20), set(n_test));
    Dataset::from_parts("tiny".into(), crate::data::Format::Idx, train, test, 0).unwrap()
}

fn images(batches: impl Iterator<Item = Batch>) -> Vec<f32> {
    batches
        .flat_map(|b| Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap())
        .collect()
}

#[test]
fn corrupted_test_set_is_the_same_for_any_batch_size() {
    let data = tiny(23);
    for c in [
        Corruption::ShotNoise,
        Corruption::Fog,
        Corruption::GlassBlur,
    ] {
        let whole = images(corrupted_batches(&data, c, 4, 100, None, Device::Cpu));
        let small = images(corrupted_batches(&data, c, 4, 5, None, Device::Cpu));
        assert_eq!(whole, small, "{}", c.name());
        assert_eq!(whole.len(), 23 * 100);
        let again = images(corrupted_batches(&data, c, 4, 7, None, Device::Cpu));
        assert_eq!(whole, again);
        // Severity 0 is the clean test split, as eval_batches makes it.
        let clean = images(corrupted_batches(&data, c, 0, 8, None, Device::Cpu));
        assert_eq!(
            clean,
            images(data.eval_batches(Split::Test, 8, Device::Cpu))
        );
        // A limit takes a prefix.
        let first = images(corrupted_batches(&data, c, 4, 5, Some(6), Device::Cpu));
        assert_eq!(first[..], whole[..600]);
    }
}

#[test]
fn grey_data_refuses_colour_corruptions_and_all_skips_them() {
    let data = tiny(4);
    let all = generated(&data, &CorruptionChoice::All).unwrap();
    assert_eq!(all.len(), Corruption::ALL.len() - 1);
    assert!(!all.contains(&Corruption::Saturate));
    let named = CorruptionChoice::Named(vec!["saturate".into()]);
    assert!(matches!(
        generated(&data, &named),
        Err(Error::GreyCorruption { .. })
    ));
}

#[test]
fn mean_weighs_every_corruption_and_severity_alike() {
    let mut m = BTreeMap::new();
    m.insert("a".to_string(), BTreeMap::from([(1u8, 0.5), (2, 0.3)]));
    m.insert("b".to_string(), BTreeMap::from([(1u8, 0.1)]));
    assert!((mean_accuracy(&m).unwrap() - 0.3).abs() < 1e-12);
    assert_eq!(mean_accuracy(&BTreeMap::new()), None);
}
