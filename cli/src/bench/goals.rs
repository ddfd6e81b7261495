//! The goals `janus bench all` holds its figures against: one table, read by the summary it
//! prints and by a test that BENCHMARKS.md's results table states the same goal for each row.

/// One row of the summary that has a goal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Goal {
    /// The row's figure, as the summary and BENCHMARKS.md's results table name it.
    pub(crate) figure: &'static str,
    /// The goal, as both print it.
    pub(crate) goal: &'static str,
}

pub(crate) const HANDSHAKES: Goal = Goal {
    figure: "v2 handshakes per edge core-second (32 in flight)",
    goal: "≥ 0.70",
};
pub(crate) const ECHO_THROUGHPUT: Goal = Goal {
    figure: "echo throughput, 64 sessions × 8 in flight",
    goal: "≥ 0.30",
};
pub(crate) const ECHO_AT_RATE: Goal = Goal {
    figure: "echo at 10 000 req/s offered (100 sessions)",
    goal: "≤ +1 ms",
};
pub(crate) const EDGE_MEMORY: Goal = Goal {
    figure: "edge memory per held, heartbeating TCP session",
    goal: "≤ 6 144 B",
};
pub(crate) const BROKER_MEMORY: Goal = Goal {
    figure: "broker memory per held session",
    goal: "≤ 6 144 B",
};
pub(crate) const IDLE: Goal = Goal {
    figure: "idle sessions per consumed core, heartbeating every 10 s",
    goal: "≥ 400 000",
};
pub(crate) const BROADCAST: Goal = Goal {
    figure: "broadcast, last delivery (median of 5)",
    goal: "≤ 300 ms for 100 000",
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every goal.
    const GOALS: [Goal; 7] = [
        HANDSHAKES,
        ECHO_THROUGHPUT,
        ECHO_AT_RATE,
        EDGE_MEMORY,
        BROKER_MEMORY,
        IDLE,
        BROADCAST,
    ];

    #[test]
    fn benchmarks_md_states_each_goal_on_its_row() {
        let text = include_str!("../../../BENCHMARKS.md");
        for goal in GOALS {
            let row = text
                .lines()
                .find(|line| line.starts_with(&format!("| {}", goal.figure)))
                .unwrap_or_else(|| panic!("BENCHMARKS.md has no row for {:?}", goal.figure));
            let last = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
            assert_eq!(
                last, goal.goal,
                "the goal of {:?} in BENCHMARKS.md",
                goal.figure
            );
        }
    }
}
