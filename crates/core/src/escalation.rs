//! Walking an escalation policy's rules.
//!
//! A policy is an ordered list of rules walked `loop_limit` times. With two
//! rules and `loop_limit` 2 an incident goes rule 1, rule 2, rule 1 (loop 2),
//! rule 2 — three escalations — and then stays with rule 2; no further timer.

/// Where an incident stands in its policy: which rule (0-based) on which
/// walk of the list (1-based, as `escalation_loop_count` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Index into the policy's ordered rules.
    pub index: usize,
    /// 1 on the first walk of the rule list.
    pub loop_count: u32,
}

/// The first step of a freshly triggered incident, if the policy has rules.
pub fn first_step(rule_count: usize) -> Option<Step> {
    (rule_count > 0).then_some(Step {
        index: 0,
        loop_count: 1,
    })
}

/// The step a timed escalation moves to, or `None` when the walk is over
/// (the last rule of the last permitted loop, or no rules at all).
///
/// `current` is `None` when the incident's rule no longer exists (it was
/// deleted); the walk then restarts at the first rule of the current loop.
pub fn next_timed(
    rule_count: usize,
    current: Option<usize>,
    loop_count: u32,
    loop_limit: u32,
) -> Option<Step> {
    let next = next_manual(rule_count, current, loop_count)?;
    (next.loop_count <= loop_limit.max(1)).then_some(next)
}

/// The step a manual escalation moves to: the next rule, wrapping to the
/// first and counting a loop. A person asking for someone else is never
/// refused, so this ignores `loop_limit`; only an empty policy gives `None`.
pub fn next_manual(rule_count: usize, current: Option<usize>, loop_count: u32) -> Option<Step> {
    if rule_count == 0 {
        return None;
    }
    let loop_count = loop_count.max(1);
    Some(match current {
        None => Step {
            index: 0,
            loop_count,
        },
        Some(i) if i + 1 < rule_count => Step {
            index: i + 1,
            loop_count,
        },
        Some(_) => Step {
            index: 0,
            loop_count: loop_count.saturating_add(1),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk(rules: usize, limit: u32) -> Vec<(usize, u32)> {
        let mut at = first_step(rules).expect("rules");
        let mut seen = vec![(at.index, at.loop_count)];
        while let Some(next) = next_timed(rules, Some(at.index), at.loop_count, limit) {
            at = next;
            seen.push((at.index, at.loop_count));
        }
        seen
    }

    #[test]
    fn two_rules_loop_limit_two_escalates_three_times() {
        assert_eq!(walk(2, 2), vec![(0, 1), (1, 1), (0, 2), (1, 2)]);
    }

    #[test]
    fn one_rule_loop_limit_one_never_escalates() {
        assert_eq!(walk(1, 1), vec![(0, 1)]);
    }

    #[test]
    fn deleted_rule_restarts_the_loop() {
        assert_eq!(
            next_timed(3, None, 2, 3),
            Some(Step {
                index: 0,
                loop_count: 2
            })
        );
    }

    #[test]
    fn manual_escalation_wraps_past_the_limit() {
        assert_eq!(
            next_manual(2, Some(1), 2),
            Some(Step {
                index: 0,
                loop_count: 3
            })
        );
        assert_eq!(next_manual(0, None, 1), None);
    }

    proptest! {
        #[test]
        fn walk_visits_every_rule_loop_limit_times(rules in 1usize..8, limit in 1u32..6) {
            let steps = walk(rules, limit);
            prop_assert_eq!(steps.len(), rules * limit as usize);
            for (n, (index, loop_count)) in steps.iter().enumerate() {
                prop_assert_eq!(*index, n % rules);
                prop_assert_eq!(*loop_count as usize, n / rules + 1);
            }
        }
    }
}
