//! The mirror's word on a change: `cutover` and `canary start` to the
//! mirror pool ask what its copies showed. The test is the guard's own
//! absolute error-rate test ([`crate::guard::sequential::RateTest`]: the
//! CUSUM the judge runs on a watched pool, with `[guard] max_error_rate`
//! and `alpha`), fed with every copy since the mirror began. A trip
//! refuses the change unless forced; anything else lets it through with a
//! note of what the mirror saw — "insufficient mirror evidence" while
//! fewer than `[guard] min_requests` copies were answered.

use crate::routing::RoutingTable;

use super::route::MirrorEvidence;

/// What the mirror says of a pool a change gives traffic to.
#[derive(Debug, Clone, PartialEq)]
pub enum Mirrored {
    /// The pool is not the mirror pool: nothing to say.
    No,
    /// Allowed; the note says what the copies showed.
    Fine(String),
    Failing(Failing),
}

/// The evidence of a failing mirror pool, for the refusal's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the mirrored traffic of pool {pool} fails the guard's error-rate test: {errors} of {copies} \
     copies failed since the mirror began ({rate:.2}%, limit {limit}%); the test's statistic \
     {statistic:.2} reached its bound {bound:.2} over the last {run_copies} copies \
     ({run_errors} failed)"
)]
pub struct Failing {
    pub pool: String,
    pub copies: u64,
    pub errors: u64,
    /// Percent.
    pub rate: f64,
    /// `[guard] max_error_rate`, percent.
    pub limit: f64,
    pub statistic: f64,
    pub bound: f64,
    /// The copies behind the statistic (since it last left zero).
    pub run_copies: u64,
    pub run_errors: u64,
}

/// Judges `pool` on its copies, if it is the mirror pool of `table`.
pub fn judge(table: &RoutingTable, pool: &str) -> Mirrored {
    let Some(route) = table.mirror.as_ref() else {
        return Mirrored::No;
    };
    if route.config.pool != pool {
        return Mirrored::No;
    }
    let min_requests = table.config.guard.min_requests;
    let evidence = route.stats.evidence();
    judge_evidence(&evidence, min_requests)
}

/// [`judge`] on evidence already read (pure, for tests).
pub fn judge_evidence(e: &MirrorEvidence, min_requests: u64) -> Mirrored {
    let rate = if e.copies == 0 {
        0.0
    } else {
        e.errors as f64 * 100.0 / e.copies as f64
    };
    match (&e.test, e.limit) {
        (Some(test), Some(limit)) if test.tripped() => Mirrored::Failing(Failing {
            pool: e.pool.clone(),
            copies: e.copies,
            errors: e.errors,
            rate,
            limit,
            statistic: test.statistic,
            bound: test.bound,
            run_copies: test.run.trials,
            run_errors: test.run.marked,
        }),
        _ if e.copies < min_requests => Mirrored::Fine(format!(
            " (insufficient mirror evidence: {} of {} copies answered, {} failed)",
            e.copies, min_requests, e.errors
        )),
        (Some(test), Some(limit)) => Mirrored::Fine(format!(
            " (mirror: {} copies, {} failed ({rate:.2}%), within the {limit}% error-rate limit; \
             statistic {:.2} of bound {:.2})",
            e.copies, e.errors, test.statistic, test.bound
        )),
        _ => Mirrored::Fine(format!(
            " (mirror: {} copies, {} failed ({rate:.2}%); no [guard] max_error_rate to test them against)",
            e.copies, e.errors
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::sequential::{Evidence, Run};

    fn evidence(copies: u64, errors: u64, statistic: f64) -> MirrorEvidence {
        MirrorEvidence {
            pool: "green".into(),
            copies,
            errors,
            test: Some(Evidence {
                statistic,
                bound: 8.0,
                run: Run {
                    trials: copies,
                    marked: errors,
                    since: None,
                },
                limit: 0.05,
            }),
            limit: Some(5.0),
        }
    }

    #[test]
    fn a_tripped_test_fails_with_its_counts_and_bound() {
        let Mirrored::Failing(f) = judge_evidence(&evidence(200, 50, 9.5), 50) else {
            panic!("not failing")
        };
        assert_eq!((f.copies, f.errors, f.run_copies), (200, 50, 200));
        let text = f.to_string();
        assert!(text.contains("50 of 200 copies failed"), "{text}");
        assert!(text.contains("(25.00%, limit 5%)"), "{text}");
        assert!(
            text.contains("statistic 9.50 reached its bound 8.00"),
            "{text}"
        );
    }

    #[test]
    fn too_few_copies_or_a_quiet_test_let_the_change_through() {
        let Mirrored::Fine(note) = judge_evidence(&evidence(10, 1, 0.5), 50) else {
            panic!()
        };
        assert!(
            note.contains("insufficient mirror evidence: 10 of 50"),
            "{note}"
        );
        let Mirrored::Fine(note) = judge_evidence(&evidence(500, 5, 0.0), 50) else {
            panic!()
        };
        assert!(note.contains("500 copies, 5 failed (1.00%)"), "{note}");
    }
}
