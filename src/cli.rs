//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "invariantd",
    version,
    about = "Keeps the databases of a microservice shop honest: evaluates declarative invariants across them."
)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short = 'c', global = true, env = "INVARIANTD_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Log filter for stderr, as in RUST_LOG (`info`, `invariantd=debug`, …). Default: `info`
    /// for `run` (start-up and changes of state), `warn` for the other commands.
    #[arg(long, global = true, env = "INVARIANTD_LOG")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate rules once now and print what violates them.
    ///
    /// Exit status: 0 all hold (or their violations only warn under warn_if/error_if), 1
    /// violations that are an error, 2 a rule could not be evaluated (unknown) or the
    /// configuration is invalid.
    Check(CheckArgs),
    /// Load the configuration and every rule without touching a database; print every error.
    /// With --connect, also prepare (never run) every dataset query on its source.
    ///
    /// Exit status: 0 valid, 1 errors found.
    Validate(ValidateArgs),
    /// Run a small shop on SQLite through an inventory outage, with the daemon watching it.
    Demo(DemoArgs),
    /// Start from the databases you have: read each source's tables (read-only) and write a
    /// starter invariantd.yaml and rules/starter.yaml, with an example rule (and its tests)
    /// per pair of sources related by a key column. Never overwrites a file.
    ///
    /// Exit status: 0 written, 2 nothing written (a file exists, a source could not be read,
    /// or a --source is malformed).
    Init(InitArgs),
    /// The daemon: run every rule on its schedule and keep the violations in the state store,
    /// until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Apply the state store's migrations (`run` also does this at start-up).
    Migrate,
    /// Run the rules' unit tests (`tests:` in each rule) in memory, with no database.
    ///
    /// Exit status: 0 every case passes, 1 a case failed, 2 the configuration or a rule is
    /// invalid, or a named rule does not exist.
    Test(TestArgs),
    /// Violations in the state store.
    #[command(subcommand)]
    Violations(ViolationsCommand),
    /// Silences of a running daemon's alerts, through its API (`INVARIANTD_TOKEN` holds the
    /// bearer token for changes).
    ///
    /// Exit status: 0 done, 1 the daemon refused (the reason is printed), 2 it could not be
    /// reached.
    Silence(SilenceArgs),
    /// The audit log: every change made through invariantd (silences, reloads, repairs), who
    /// made it and when, hash-chained.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The evidence for one key of a rule, judged now: each dataset's rows for it, grace, the
    /// value of every part of the assertion, the verdict, its violations and repairs.
    ///
    /// Exit status: 0 the rule holds for the key, 1 it is violated, 2 it cannot be judged
    /// (in grace, no rows, an error) or the configuration is invalid.
    Explain(ExplainArgs),
    /// Repairs of a running daemon, through its API: list, show, approve, reject, and enable
    /// a rule's automatic repairs (`INVARIANTD_TOKEN` holds the bearer token for changes).
    ///
    /// Exit status: 0 done, 1 the daemon refused (the reason is printed), 2 it could not be
    /// reached.
    Repairs(RepairsArgs),
    /// The replicas sharing the state store: each one's heartbeat, its leases and the rules it
    /// runs, and any rule no live replica holds. Read from the state store, so it works with
    /// no daemon running.
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    pub rule: String,
    pub key: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RepairsArgs {
    /// The daemon's address (default: `http.listen` of the config file).
    #[arg(long, env = "INVARIANTD_URL", global = true)]
    pub url: Option<String>,

    /// The bearer token (a name:role:token line's token in auth.tokens_file); your name in
    /// the audit log.
    #[arg(long, env = "INVARIANTD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: RepairsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RepairsCommand {
    /// List repairs, oldest first.
    List(RepairsListArgs),
    /// One repair: its planned actions, state, approvals and result.
    Show {
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Approve a repair (or, with --rule, every repair of a rule waiting for a person). Needs
    /// a token of role `approve`.
    Approve {
        /// The repair's id (from `repairs list`).
        #[arg(required_unless_present = "rule", conflicts_with = "rule")]
        id: Option<String>,
        /// Every repair of this rule waiting for a person.
        #[arg(long)]
        rule: Option<String>,
        /// Another of the rule's actions than the planned one.
        #[arg(long)]
        action: Option<String>,
        /// Why; recorded with your name.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a repair: it will not be applied. Needs a token of role `approve`.
    Reject {
        id: String,
        /// Why; recorded with your name.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Let a rule, as it is loaded now, apply its automatic repairs (new and changed rules
    /// start in dry run); under four eyes a second person must enable it too. Needs a token of
    /// role `admin`.
    Enable { rule: String },
}

#[derive(Debug, Args)]
pub struct RepairsListArgs {
    /// pending, dry_run, approved, applied, failed, skipped, rejected, needs_manual or all.
    #[arg(long, default_value = "all")]
    pub state: String,

    /// Only this rule's repairs.
    #[arg(long)]
    pub rule: Option<String>,

    /// At most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no entry was edited, deleted or added by hand, and that every repair has
    /// its entries.
    ///
    /// Exit status: 0 the chain is whole, 1 it is broken (where and how is printed).
    Verify {
        /// A head kept elsewhere (from `/api/v1/audit/head` or an earlier `verify`; its first
        /// 12 characters or more): the chain must still reach it, or it was cut short.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,

        /// Check only what was written after a head kept from an earlier `verify`
        /// (`ENTRIES:HASH`, as it prints it, or `entries` and `hash` of `/api/v1/audit/head`):
        /// that head must still be in the chain, and every entry after it, and every repair
        /// planned since, is checked. Takes as long as what was written since; an older entry
        /// edited since is for a whole `verify` to find.
        #[arg(long, value_name = "ENTRIES:HASH", value_parser = parse_kept_head, conflicts_with = "head")]
        since: Option<(i64, String)>,

        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The newest entries first.
    List(AuditListArgs),
}

/// A head kept from an earlier verify: `ENTRIES:HASH` (the hash may itself hold a colon,
/// `hmac-sha256:…`), the hash 12 characters or more.
fn parse_kept_head(s: &str) -> Result<(i64, String), String> {
    let shape = "give ENTRIES:HASH, as `audit verify` prints it (e.g. 120:hmac-sha256:3f9a…)";
    let (n, hash) = s
        .split_once(':')
        .ok_or_else(|| format!("no ':' in {s:?}: {shape}"))?;
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{n:?} is not a number of entries (1 or more): {shape}"))?;
    if hash.trim_start_matches("hmac-sha256:").len() < 12 {
        return Err(format!(
            "the hash {hash:?} is shorter than 12 characters: {shape}"
        ));
    }
    Ok((n, hash.to_string()))
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// At most this many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SilenceArgs {
    /// The daemon's address (default: `http.listen` of the config file).
    #[arg(long, env = "INVARIANTD_URL", global = true)]
    pub url: Option<String>,

    /// The bearer token (a name:role:token line's token in auth.tokens_file).
    #[arg(long, env = "INVARIANTD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: SilenceCommand,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence a rule, one of its keys, or whatever matches labels, until a time. Needs a
    /// token of role `approve`.
    Add(SilenceAddArgs),
    /// List the active silences (or every one kept, with --all).
    List(SilenceListArgs),
    /// Lift a silence now. Needs a token of role `approve`.
    Expire {
        /// The silence's id (from `silence list`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct SilenceAddArgs {
    /// The rule to silence.
    #[arg(long)]
    pub rule: Option<String>,

    /// Only this key's violation of the rule.
    #[arg(long, requires = "rule")]
    pub key: Option<String>,

    /// More matchers, FIELD=VALUE: severity, kind, source, or a rule label (`team=inventory`).
    #[arg(long = "match", value_name = "FIELD=VALUE")]
    pub matchers: Vec<String>,

    /// How long, from now (`2h`, `30m`).
    #[arg(
        long = "for",
        value_name = "DURATION",
        conflicts_with = "until",
        required_unless_present = "until"
    )]
    pub duration: Option<String>,

    /// Until this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,

    /// Why: a ticket, what you are doing. Recorded with your name.
    #[arg(long)]
    pub comment: String,
}

#[derive(Debug, Args)]
pub struct SilenceListArgs {
    /// Also silences that are over.
    #[arg(long)]
    pub all: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Also connect to every source and prepare (describe, never run) each dataset's query:
    /// report misspelt tables and columns, a missing or unusable key column, a missing
    /// `updated_at`, an assertion that names a column the query does not return, and sources
    /// that cannot be reached.
    #[arg(long)]
    pub connect: bool,

    /// Select rules as dbt does: NAME (`*` and `?` match any text and one character),
    /// KEY=VALUE or label:KEY=VALUE (a label), path:FILE_OR_DIRECTORY, severity:LEVEL;
    /// terms joined by commas must all hold; several selectors (repeated, or separated by
    /// spaces) add up. A term that selects no rule is an error.
    #[arg(long = "select", short = 's', value_name = "SELECTOR")]
    pub select: Vec<String>,

    /// Leave out the rules these selectors select (the same syntax as --select).
    #[arg(long, value_name = "SELECTOR")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rules whose cases to run (by name, or any selector as --select takes); all when
    /// none is given.
    pub rules: Vec<String>,

    /// Select rules as dbt does: NAME (`*` and `?` match any text and one character),
    /// KEY=VALUE or label:KEY=VALUE (a label), path:FILE_OR_DIRECTORY, severity:LEVEL;
    /// terms joined by commas must all hold; several selectors (repeated, or separated by
    /// spaces) add up. A term that selects no rule is an error.
    #[arg(long = "select", short = 's', value_name = "SELECTOR")]
    pub select: Vec<String>,

    /// Leave out the rules these selectors select (the same syntax as --select).
    #[arg(long, value_name = "SELECTOR")]
    pub exclude: Vec<String>,

    /// Also write a JUnit XML report here: a test case per rule (per fixture case for
    /// `test`), failures with their message and a sample of violations.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Also write the run's results here as JSON, schema `invariantd/run-results/v1`
    /// (README: Reports for CI).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run every rule once, record the results, print them as `check` does, and exit (with
    /// `check`'s exit status).
    #[arg(long)]
    pub once: bool,

    /// Plan and show repairs, apply none (as `repairs.dry_run: true`).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ViolationsCommand {
    /// List violations, oldest first.
    List(ViolationsListArgs),
}

#[derive(Debug, Args)]
pub struct ViolationsListArgs {
    /// Only this rule's violations.
    #[arg(long)]
    pub rule: Option<String>,

    /// Only the violations of this key (as text).
    #[arg(long)]
    pub key: Option<String>,

    /// `open`, `resolved` or `all`.
    #[arg(long, default_value = "open", value_parser = ["open", "resolved", "all"])]
    pub state: String,

    /// At most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,

    /// Continue after this violation id (the `next` of a previous JSON page).
    #[arg(long)]
    pub after: Option<i64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rules to run (by name, or any selector as --select takes); all when none is given.
    pub rules: Vec<String>,

    /// Select rules as dbt does: NAME (`*` and `?` match any text and one character),
    /// KEY=VALUE or label:KEY=VALUE (a label), path:FILE_OR_DIRECTORY, severity:LEVEL;
    /// terms joined by commas must all hold; several selectors (repeated, or separated by
    /// spaces) add up. A term that selects no rule is an error.
    #[arg(long = "select", short = 's', value_name = "SELECTOR")]
    pub select: Vec<String>,

    /// Leave out the rules these selectors select (the same syntax as --select).
    #[arg(long, value_name = "SELECTOR")]
    pub exclude: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Violations listed per rule in the table (0: all). JSON always lists all.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,

    /// How many rules run at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Also write a JUnit XML report here: a test case per rule (per fixture case for
    /// `test`), failures with their message and a sample of violations.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Also write the run's results here as JSON, schema `invariantd/run-results/v1`
    /// (README: Reports for CI).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A source to read, as NAME=URL (`orders=postgres://checker@db/orders`); give one per
    /// source. A URL's password is not written: the file names ${NAME_PASSWORD} instead.
    #[arg(long = "source", short = 's', value_name = "NAME=URL", required = true)]
    pub sources: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the shop's databases and configuration (default: a new temporary
    /// directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// How much faster than real time the story plays (its 35 minutes take about 70 s at the
    /// default). The demo's copy of the rules is sped up by the same factor.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub speed: u32,

    /// How long the repairs wait for you to approve them on the web page before the demo
    /// approves them itself, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub approve_after: u32,

    /// The address of the demo's web page and API (port 0: a free one); its on-call webhook
    /// listens on the same address, on a free port. `0.0.0.0:8080` opens the page to other
    /// machines (a VM, a container).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}
