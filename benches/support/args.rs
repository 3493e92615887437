//! The bench arguments: criterion's, read again for the tables criterion does not run.
//! Shared by every bench through `#[path]` (each bench is its own crate).

/// How long the tables run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Length {
    /// `cargo test --benches`: just check that they run.
    Test,
    /// `-- --quick` or `BENCH_QUICK=1`.
    Quick,
    Full,
}

pub(crate) struct Args {
    pub(crate) length: Length,
    list: bool,
    filter: Option<String>,
}

impl Args {
    pub(crate) fn parse() -> Self {
        // Criterion's options that take a value, so that the value is not taken for the
        // filter.
        const WITH_VALUE: [&str; 19] = [
            "-c",
            "--color",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--format",
            "--profile-time",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|arg| arg == flag);
        let quick = has("--quick") || std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
        let length = if !has("--bench") || has("--test") {
            Length::Test
        } else if quick {
            Length::Quick
        } else {
            Length::Full
        };
        let mut filter = None;
        let mut previous: Option<&str> = None;
        for arg in &args {
            let takes_value = previous.is_some_and(|previous| WITH_VALUE.contains(&previous));
            if !arg.starts_with('-') && !takes_value {
                filter = Some(arg.clone());
            }
            previous = Some(arg);
        }
        Self {
            length,
            list: has("--list"),
            filter,
        }
    }

    /// Whether the table `name` runs: not when listing, and only if it matches the filter.
    pub(crate) fn wants(&self, name: &str) -> bool {
        !self.list
            && self
                .filter
                .as_deref()
                .is_none_or(|filter| name.contains(filter))
    }
}
