//! Commands: loading what they need, running, and the exit status each one promises.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{CheckArgs, Cli, Command, Format, RunArgs, ViolationsCommand, ViolationsListArgs};
use crate::config::Config;
use crate::diag::Diagnostics;
use crate::rules::Rule;
use crate::sources::Sources;
use crate::state::{StateStore, ViolationFilter};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Run(_)) {
        crate::telemetry::init(&cli.log_level);
    }
    match cli.command {
        Command::Validate => Ok(validate(&cli.config)),
        Command::Check(args) => check(&cli.config, args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Run(args) => run_daemon(&cli.config, &cli.log_level, args),
        Command::Migrate => migrate(&cli.config),
        Command::Violations(ViolationsCommand::List(args)) => list_violations(&cli.config, args),
    }
}

fn config_only(config_path: &Path) -> Result<Config, ExitCode> {
    crate::config::load(config_path, &env_lookup).map_err(|diags| {
        eprintln!("{diags}");
        ExitCode::from(2)
    })
}

fn migrate(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match config_only(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    runtime()?.block_on(async {
        let store = StateStore::connect(&config.state).await?;
        store.migrate().await?;
        println!("The state store is migrated.");
        Ok(ExitCode::SUCCESS)
    })
}

fn run_daemon(config_path: &Path, log_level: &str, args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, rules) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::from(2));
        }
    };
    // Flushes the traces not yet exported when the daemon returns.
    let _telemetry = crate::telemetry::init_daemon(
        log_level,
        config.log_format,
        config.otlp_endpoint.as_deref(),
    )?;
    runtime()?.block_on(async {
        let concurrency = config.max_concurrent_runs;
        let rt = crate::daemon::Runtime::start(config, rules).await?;
        if args.once {
            let results = crate::daemon::run_once(&rt, concurrency).await?;
            let runs: Vec<_> = results.into_iter().map(|(run, _)| run).collect();
            print!("{}", crate::check::render_table(&rt.rules, &runs, 20));
            return Ok(ExitCode::from(crate::check::exit_code(&runs)));
        }
        crate::daemon::serve(std::sync::Arc::new(rt)).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn list_violations(config_path: &Path, args: ViolationsListArgs) -> anyhow::Result<ExitCode> {
    let config = match config_only(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    runtime()?.block_on(async {
        let store = StateStore::open(&config.state).await?;
        let filter = ViolationFilter {
            rule: args.rule,
            state: (args.state != "all").then_some(args.state),
            after_id: args.after,
            limit: args.limit,
        };
        let items = store.violations(&filter).await?;
        let next = (items.len() as u32 == args.limit && args.limit > 0)
            .then(|| items.last().map(|v| v.id))
            .flatten();
        match args.format {
            Format::Json => {
                let doc = serde_json::json!({
                    "items": items.iter().map(crate::state::violation_json).collect::<Vec<_>>(),
                    "next": next.map(|n| n.to_string()),
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
            Format::Table => print!("{}", crate::state::violations_table(&items, next)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the config and its rules, reporting every problem in both.
pub fn load(config_path: &Path) -> Result<(Config, Vec<Rule>), Diagnostics> {
    let (config, mut diags) = crate::config::load_partial(config_path, &env_lookup);
    let Some(config) = config else {
        return Err(diags);
    };
    match crate::rules::load(&config, &env_lookup) {
        Ok(rules) if diags.is_empty() => Ok((config, rules)),
        Ok(_) => Err(diags),
        Err(more) => {
            diags.extend(more);
            Err(diags)
        }
    }
}

fn validate(config_path: &Path) -> ExitCode {
    match load(config_path) {
        Ok((config, rules)) => {
            println!(
                "{}: {} source{}, {} rule{}: valid",
                config.path.display(),
                config.sources.len(),
                if config.sources.len() == 1 { "" } else { "s" },
                rules.len(),
                if rules.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            eprintln!("{diags}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn check(config_path: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (config, rules) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::from(2));
        }
    };
    let selected = select_rules(rules, &args.rules)?;
    let runtime = runtime()?;
    let runs = runtime.block_on(async {
        let sources = Sources::new(&config.sources);
        crate::check::run_rules(&selected, &sources, usize::from(args.concurrency)).await
    });
    let text = match args.format {
        Format::Table => crate::check::render_table(&selected, &runs, args.limit),
        Format::Json => crate::check::render_json(&selected, &runs),
    };
    print!("{text}");
    Ok(ExitCode::from(crate::check::exit_code(&runs)))
}

/// The named rules in the order given, or all of them; an unknown name is an error.
fn select_rules(rules: Vec<Rule>, names: &[String]) -> anyhow::Result<Vec<Rule>> {
    if names.is_empty() {
        return Ok(rules);
    }
    let mut selected = Vec::new();
    for name in names {
        match rules.iter().find(|r| &r.name == name) {
            Some(r) => selected.push(r.clone()),
            None => {
                let known: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
                anyhow::bail!("no rule named `{name}`; rules: {}", known.join(", "));
            }
        }
    }
    Ok(selected)
}
