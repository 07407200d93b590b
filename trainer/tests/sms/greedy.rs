//! Greedy soups: which candidates they keep, and by which scores.

use super::*;

#[test]
fn greedy_soup_keeps_only_candidates_that_do_not_lower_validation_accuracy() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(&data, &run, &["--soup", "greedy", "--phases", "1"]);
    let phase = json(&run.join("phase-1/phase.json"));
    let candidates = phase["candidates"].as_array().unwrap();
    let val = |i: u64| {
        candidates[i as usize]["eval"]["val"]["top1"]
            .as_f64()
            .unwrap()
    };
    let chosen: Vec<u64> = phase["chosen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // The soup starts from the candidate with the best validation accuracy.
    let best = (0..3)
        .max_by(|&a, &b| val(a).total_cmp(&val(b)).then(b.cmp(&a)))
        .unwrap();
    assert_eq!(chosen[0], best);
    // Each trial (after the best candidate alone) is kept exactly when it
    // does not lower the running score, which starts at the best
    // candidate's validation accuracy.
    let mut current = val(best);
    let mut kept = vec![best];
    for t in phase["trials"].as_array().unwrap() {
        let score = t["score"].as_f64().unwrap();
        let keep = score >= current;
        assert_eq!(t["kept"].as_bool().unwrap(), keep, "{t}");
        if keep {
            current = score;
            kept.push(t["candidate"].as_u64().unwrap());
        }
    }
    kept.sort();
    let mut chosen_sorted = chosen.clone();
    chosen_sorted.sort();
    assert_eq!(kept, chosen_sorted);
}

#[test]
fn greedy_soup_ranks_candidates_by_recalibrated_validation_scores() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(
        &data,
        &run,
        &["--soup", "greedy", "--phases", "1", "--bn-recal", "ema"],
    );
    let phase = json(&run.join("phase-1/phase.json"));
    let s = session(&run);
    let mut scores = Vec::new();
    for (i, c) in phase["candidates"].as_array().unwrap().iter().enumerate() {
        // What the greedy soup ranked by is the candidate's validation
        // evaluation after recalibration (here the reference code's EMA).
        let model = s
            .load(&run.join(format!("phase-1/candidate-{i}.safetensors")))
            .unwrap();
        s.recalibrate(&model);
        let val = trainer::evaluate(
            &model,
            s.data
                .eval_batches(trainer::Split::Val, 500, tch::Device::Cpu),
        )
        .unwrap();
        assert_same_eval(&val, &c["eval"]["val"], &format!("candidate {i}"));
        scores.push(val.top1);
    }
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .unwrap();
    assert_eq!(phase["chosen"][0].as_u64().unwrap(), best as u64);
}
