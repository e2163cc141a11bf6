//! The commands: one function each, and the only place that wires modules together — what
//! each command loads, runs, prints, and the exit status it promises.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::api::repairs::{BulkView, EnableAnswer, RepairView};
use crate::api::silences::SilenceView;
use crate::api::views::Page;
use crate::cli::{
    AuditCommand, CheckArgs, Cli, Command, ExplainArgs, Format, RepairsArgs, RepairsCommand,
    RunArgs, SilenceArgs, SilenceCommand, TestArgs, ValidateArgs, ViolationsCommand,
    ViolationsListArgs,
};
use crate::context::{Context, load, load_config};
use crate::diag::Diagnostics;
use crate::rules::Rule;
use crate::rules::select::Selection;
use crate::sources::Sources;
use crate::state::{StateStore, ViolationFilter, ViolationState};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Before any connection: the state store's too.
    crate::sources::install_tls_provider();
    let is_daemon = matches!(cli.command, Command::Run(_));
    let log_level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| if is_daemon { "info" } else { "warn" }.to_string());
    if !is_daemon {
        crate::telemetry::init(&log_level);
    }
    match cli.command {
        Command::Validate(args) => validate(&cli.config, args),
        Command::Check(args) => check(&cli.config, args),
        Command::Demo(args) => runtime()?.block_on(crate::demo::run(args)),
        Command::Init(a) => Ok(runtime()?.block_on(crate::init::command(&cli.config, &a.sources))),
        Command::Run(args) => run_daemon(&cli.config, &log_level, args),
        Command::Migrate => migrate(&cli.config),
        Command::Test(args) => test(&cli.config, args),
        Command::Violations(ViolationsCommand::List(args)) => list_violations(&cli.config, args),
        Command::Silence(args) => silence(&cli.config, args),
        Command::Audit(cmd) => audit(&cli.config, cmd),
        Command::Repairs(args) => repairs(&cli.config, args),
        Command::Explain(args) => explain(&cli.config, args),
        Command::Cluster(args) => cluster(&cli.config, args),
    }
}

/// `cluster`: the replicas and their leases, from the state store.
fn cluster(config_path: &Path, args: crate::cli::ClusterArgs) -> anyhow::Result<ExitCode> {
    let (config, rules) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(diags) => return Ok(invalid(&diags)),
    };
    runtime()?.block_on(async {
        let store = StateStore::open(&config.state).await?;
        let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        let view = crate::api::cluster::cluster_view(&store.leases().await?, None, &names);
        match args.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
            Format::Table => print!("{}", crate::report::cluster_table(&view)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `audit verify|list`, on the state store directly.
fn audit(config_path: &Path, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(diags) => return Ok(invalid(&diags)),
    };
    runtime()?.block_on(async {
        let store = StateStore::open(&config.state).await?;
        match cmd {
            AuditCommand::Verify {
                head: kept,
                since,
                format,
            } => {
                let found = match &since {
                    Some((seq, hash)) => store.verify_audit_since(*seq, hash).await?,
                    None => store.verify_audit(kept.as_deref()).await?,
                };
                let intact = matches!(found, crate::state::Verification::Intact { .. });
                match format {
                    Format::Json => println!("{}", crate::report::verification_json(&found)),
                    Format::Table => print!(
                        "{}",
                        crate::report::verification_text(
                            &found,
                            since.as_ref().map(|(seq, _)| *seq),
                            config.auth.audit_key_file.is_some()
                        )
                    ),
                }
                Ok(if intact {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            AuditCommand::List(args) => {
                let entries = store.audit_entries(None, args.limit).await?;
                match args.format {
                    Format::Json => print!("{}", crate::report::audit_json(&entries)),
                    Format::Table => print!("{}", crate::report::audit_table(&entries)),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// `explain RULE KEY`: the evidence, judged now from the sources, with the state store's
/// history of the key.
fn explain(config_path: &Path, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let (config, rules) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(diags) => return Ok(invalid(&diags)),
    };
    let Some(rule) = rules.iter().find(|r| r.name == args.rule) else {
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        eprintln!(
            "error: no rule named `{}`; rules: {}",
            args.rule,
            names.join(", ")
        );
        return Ok(ExitCode::from(2));
    };
    runtime()?.block_on(async {
        let store = StateStore::open(&config.state).await?;
        let sources = Sources::new(&config.sources, config.secrets.clone());
        let evidence = crate::repair::evidence(rule, &sources, &store, &args.key).await?;
        match args.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&evidence)?),
            Format::Table => print!("{}", crate::report::evidence_text(&evidence)),
        }
        Ok(ExitCode::from(match evidence.now.verdict {
            "holds" => 0,
            "violated" => 1,
            _ => 2,
        }))
    })
}

/// A client for a running daemon's API: its base URL (`--url`, else the config's
/// `http.listen`) and a blocking HTTP client; or the exit status when neither can be had.
fn api_client(
    config_path: &Path,
    url: &Option<String>,
) -> anyhow::Result<Result<(String, reqwest::blocking::Client), ExitCode>> {
    let base = match url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => match load_config(config_path) {
            Ok(c) => format!("http://{}", c.http_listen),
            Err(diags) => return Ok(Err(invalid(&diags))),
        },
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    Ok(Ok((base, client)))
}

/// Sends an API request (with the token, if any): the answer's JSON, or the exit status after
/// saying why not (1 refused, 2 not reached).
fn api_send(
    request: reqwest::blocking::RequestBuilder,
    token: &Option<String>,
    base: &str,
) -> Result<serde_json::Value, ExitCode> {
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    let response = match request.send() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot reach the daemon at {base}: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let status = response.status();
    let body: serde_json::Value = response
        .text()
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if !status.is_success() {
        eprintln!(
            "error: the daemon answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
        if status == reqwest::StatusCode::UNAUTHORIZED {
            eprintln!("{}", token_hint(token.is_some()));
        }
        return Err(ExitCode::from(1));
    }
    Ok(body)
}

/// What to do about a 401: where the CLI takes its token from.
fn token_hint(sent: bool) -> &'static str {
    if sent {
        "hint: the token sent (from INVARIANTD_TOKEN or --token) is not one the daemon's \
         auth.tokens_file lists, or has no role for this"
    } else {
        "hint: no token was sent: set INVARIANTD_TOKEN (or pass --token, which other users of \
         the machine can see in the process list)"
    }
}

/// The daemon's answer as the API's type for it: the CLI reads what the server wrote with the
/// same types (`api`).
fn typed<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(body)
        .map_err(|e| anyhow::anyhow!("the daemon's answer is not as expected: {e}"))
}

/// A JSON request body.
fn json_body(
    request: reqwest::blocking::RequestBuilder,
    body: &serde_json::Value,
) -> reqwest::blocking::RequestBuilder {
    request
        .header("Content-Type", "application/json")
        .body(body.to_string())
}

/// `silence add|list|expire`: requests to the daemon's API, whose answer is printed.
fn silence(config_path: &Path, args: SilenceArgs) -> anyhow::Result<ExitCode> {
    let (base, client) = match api_client(config_path, &args.url)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let request = match &args.command {
        SilenceCommand::Add(a) => {
            let mut matchers = serde_json::Map::new();
            if let Some(rule) = &a.rule {
                matchers.insert("rule".into(), rule.clone().into());
            }
            for m in &a.matchers {
                let Some((field, value)) = m.split_once('=') else {
                    eprintln!("error: --match `{m}`: write FIELD=VALUE, such as team=inventory");
                    return Ok(ExitCode::from(2));
                };
                matchers.insert(field.trim().into(), value.trim().into());
            }
            let mut body = serde_json::json!({ "matchers": matchers, "comment": a.comment });
            if let Some(k) = &a.key {
                body["key"] = k.clone().into();
            }
            match (&a.duration, &a.until) {
                (Some(d), _) => body["duration"] = d.clone().into(),
                (None, Some(u)) => body["ends_at"] = u.clone().into(),
                (None, None) => {}
            }
            json_body(client.post(format!("{base}/api/v1/silences")), &body)
        }
        SilenceCommand::List(l) => client.get(format!(
            "{base}/api/v1/silences{}",
            if l.all { "?state=all" } else { "" }
        )),
        SilenceCommand::Expire { id } => client.delete(format!("{base}/api/v1/silences/{id}")),
    };
    let body = match api_send(request, &args.token, &base) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let json = matches!(&args.command, SilenceCommand::List(l) if l.format == Format::Json);
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let items: Vec<SilenceView> = match &args.command {
            SilenceCommand::List(_) => typed::<Page<SilenceView>>(body)?.items,
            _ => vec![typed::<SilenceView>(body)?],
        };
        print!("{}", crate::report::silences_table(&items));
    }
    Ok(ExitCode::SUCCESS)
}

/// `repairs list|show|approve|reject|enable`: requests to the daemon's API.
fn repairs(config_path: &Path, args: RepairsArgs) -> anyhow::Result<ExitCode> {
    let (base, client) = match api_client(config_path, &args.url)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let api = format!("{base}/api/v1");
    let decision = |action: &Option<String>, comment: &Option<String>| {
        let mut body = serde_json::Map::new();
        if let Some(a) = action {
            body.insert("action".into(), a.clone().into());
        }
        if let Some(c) = comment {
            body.insert("comment".into(), c.clone().into());
        }
        serde_json::Value::Object(body)
    };
    let (request, format) = match &args.command {
        RepairsCommand::List(l) => {
            let mut url = reqwest::Url::parse(&format!("{api}/repairs"))?;
            url.query_pairs_mut()
                .append_pair("state", &l.state)
                .append_pair("limit", &l.limit.to_string());
            if let Some(r) = &l.rule {
                url.query_pairs_mut().append_pair("rule", r);
            }
            (client.get(url), l.format)
        }
        RepairsCommand::Show { id, format } => (client.get(format!("{api}/repairs/{id}")), *format),
        RepairsCommand::Approve {
            id,
            rule,
            action,
            comment,
        } => {
            let url = match (id, rule) {
                (_, Some(rule)) => format!("{api}/rules/{rule}/repairs/approve"),
                (Some(id), None) => format!("{api}/repairs/{id}/approve"),
                (None, None) => unreachable!("clap requires an id or --rule"),
            };
            (
                json_body(client.post(url), &decision(action, comment)),
                Format::Table,
            )
        }
        RepairsCommand::Reject { id, comment } => (
            json_body(
                client.post(format!("{api}/repairs/{id}/reject")),
                &decision(&None, comment),
            ),
            Format::Table,
        ),
        RepairsCommand::Enable { rule } => (
            client.post(format!("{api}/rules/{rule}/repairs/enable")),
            Format::Table,
        ),
    };
    let body = match api_send(request, &args.token, &base) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    match (format, &args.command) {
        (Format::Json, _) => println!("{}", serde_json::to_string_pretty(&body)?),
        (_, RepairsCommand::List(_)) => print!(
            "{}",
            crate::report::repairs_table(&typed::<Page<RepairView>>(body)?)
        ),
        (_, RepairsCommand::Enable { rule }) => {
            let answer: EnableAnswer = typed(body)?;
            let fingerprint = &answer.fingerprint;
            if answer.enabled {
                println!("automatic repairs of `{rule}` enabled (fingerprint {fingerprint})");
                let approved = answer.approved.unwrap_or(0);
                println!(
                    "{approved} waiting repair{} approved",
                    if approved == 1 { "" } else { "s" }
                );
                if let Some(Some(why)) = &answer.hold_reason {
                    println!("{} held for a person: {why}", answer.held.unwrap_or(0));
                }
            } else {
                println!(
                    "enabling `{rule}` (fingerprint {fingerprint}) asked for; four eyes: a second person must enable it too"
                );
            }
        }
        (_, RepairsCommand::Approve { rule: Some(_), .. }) => {
            let bulk: BulkView = typed(body)?;
            let n = bulk.approved.len();
            println!("{n} repair{} approved", if n == 1 { "" } else { "s" });
            for r in &bulk.refused {
                println!("repair {} not approved: {}", r.id, r.error);
            }
        }
        _ => print!(
            "{}",
            crate::report::repair_detail(&typed::<RepairView>(body)?)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the diagnostics of a config that cannot be used, with the exit status for it.
fn invalid(diags: &Diagnostics) -> ExitCode {
    eprintln!("{diags}");
    ExitCode::from(2)
}

/// Prints what is valid but probably not meant, on stderr; commands go on.
fn print_warnings(config: &crate::config::Config, rules: &[Rule]) {
    let config_warnings = config.alerting.warnings.iter();
    for w in config_warnings.chain(rules.iter().flat_map(|r| &r.warnings)) {
        eprintln!("warning: {w}");
    }
}

/// The multi-threaded runtime every command that does I/O runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn migrate(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(diags) => return Ok(invalid(&diags)),
    };
    runtime()?.block_on(async {
        let store = StateStore::connect(&config.state).await?;
        store.migrate().await?;
        println!("The state store is migrated.");
        Ok(ExitCode::SUCCESS)
    })
}

fn run_daemon(config_path: &Path, log_level: &str, args: RunArgs) -> anyhow::Result<ExitCode> {
    let (mut config, rules) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(diags) => return Ok(invalid(&diags)),
    };
    if args.dry_run {
        config.repairs.dry_run = true;
        config.repairs.dry_run_forced = true;
    }
    // Flushes the traces not yet exported when the daemon returns.
    let _telemetry = crate::telemetry::init_daemon(
        log_level,
        config.log_format,
        config.otlp_endpoint.as_deref(),
    )?;
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let concurrency = config.max_concurrent_runs;
        let ctx = Context::start(config, rules).await?;
        if args.once {
            let results = crate::daemon::run_once(&ctx, concurrency).await?;
            let runs: Vec<_> = results.into_iter().map(|(run, _)| run).collect();
            print!("{}", crate::report::render_table(&ctx.rules, &runs, 20));
            return Ok(ExitCode::from(crate::report::exit_code(&runs)));
        }
        crate::daemon::serve(ctx).await?;
        Ok(ExitCode::SUCCESS)
    });
    // Once the daemon has returned (after `shutdown_grace` at the latest), a task still
    // running does not hold the process: dropping the runtime would wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn list_violations(config_path: &Path, args: ViolationsListArgs) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(diags) => return Ok(invalid(&diags)),
    };
    runtime()?.block_on(async {
        let store = StateStore::open(&config.state).await?;
        let filter = ViolationFilter {
            rules: None,
            rule: args.rule,
            key: args.key,
            state: ViolationState::parse(&args.state),
            after_id: args.after,
            limit: args.limit,
        };
        let items = store.violations(&filter).await?;
        let next = (items.len() as u32 == args.limit)
            .then(|| items.last().map(|v| v.id))
            .flatten();
        match args.format {
            Format::Json => print!("{}", crate::report::violations_json(&items, next)),
            Format::Table => print!("{}", crate::report::violations_table(&items, next)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn validate(config_path: &Path, args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let (config, rules) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::from(1));
        }
    };
    print_warnings(&config, &rules);
    if let Some(Err(e)) = config
        .auth
        .audit_key_file
        .as_deref()
        .map(crate::state::load_audit_key)
    {
        eprintln!("error: {e}\n1 error");
        return Ok(ExitCode::from(1));
    }
    // The tokens file as `run` reads it: the same verdict, with the line of each problem.
    match crate::context::tokens(&config) {
        Ok(tokens) => {
            if let Some(w) = config
                .auth
                .tokens_file
                .as_deref()
                .and_then(|p| tokens.warning(p))
            {
                eprintln!("warning: {w}");
            }
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            let n = errors.0.len();
            eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
            return Ok(ExitCode::from(1));
        }
    }
    // Every rule file is read and checked (the daemon loads them all); a selection says
    // which rules `--connect` prepares on their sources.
    let total = rules.len();
    let rules = match select_rules(rules, &[], &args.select, &args.exclude) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.connect {
        let diags = runtime()?.block_on(prepare_all(&config, &rules));
        if !diags.is_empty() {
            eprintln!("{diags}");
            return Ok(ExitCode::from(1));
        }
    }
    println!(
        "{}: {} source{}, {}{} rule{}: valid{}",
        config.path.display(),
        config.sources.len(),
        if config.sources.len() == 1 { "" } else { "s" },
        if rules.len() < total {
            format!("{} of ", rules.len())
        } else {
            String::new()
        },
        total,
        if total == 1 { "" } else { "s" },
        if args.connect {
            ", every query prepared on its source"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `validate --connect`: every rule's queries prepared on their sources, each problem against
/// the rule's file:line (the query's, for problems with a query), and each source that cannot
/// be reached once, with the rules that need it.
async fn prepare_all(config: &crate::config::Config, rules: &[Rule]) -> Diagnostics {
    use futures_util::StreamExt;
    let sources = Sources::new(&config.sources, config.secrets.clone());
    let found: Vec<Vec<crate::engine::Problem>> = futures_util::stream::iter(rules)
        .map(|rule| crate::engine::prepare(rule, &sources))
        .buffered(4)
        .collect()
        .await;
    let mut diags = Diagnostics::default();
    let mut down: std::collections::BTreeMap<String, (String, Vec<String>)> = Default::default();
    for (rule, problems) in rules.iter().zip(found) {
        for problem in problems {
            let error = &problem.error;
            if let Some(source) = problem.unreachable {
                let (_, needed_by) = down
                    .entry(source)
                    .or_insert_with(|| (error.message.clone(), Vec::new()));
                if !needed_by.contains(&rule.name) {
                    needed_by.push(rule.name.clone());
                }
                continue;
            }
            let origin = problem.origin.as_ref().unwrap_or(&rule.origin);
            diags.push(
                &origin.file,
                origin.pos,
                format!("rule `{}`: {} ({})", rule.name, error.message, error.kind),
            );
        }
    }
    for (source, (cause, needed_by)) in down {
        diags.push(
            &config.path,
            crate::diag::Pos::default(),
            format!(
                "source `{source}` cannot be reached: {cause} (needed by {})",
                needed_by.join(", ")
            ),
        );
    }
    diags
}

/// What `check` and `test` do first: load the configuration and rules, warn as the daemon
/// does, select the rules, and make sure the reports asked for can be written; the exit
/// status when any of it fails.
fn load_selected(
    config_path: &Path,
    names: &[String],
    select: &[String],
    exclude: &[String],
    reports: &[Option<&Path>],
) -> Result<(crate::config::Config, Vec<Rule>), ExitCode> {
    let (config, rules) = load(config_path).map_err(|diags| invalid(&diags))?;
    print_warnings(&config, &rules);
    let usage = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let selected = select_rules(rules, names, select, exclude).map_err(|e| usage(e.to_string()))?;
    crate::report::files::writable(reports).map_err(usage)?;
    Ok((config, selected))
}

fn check(config_path: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let reports = [args.junit.as_deref(), args.output.as_deref()];
    let (config, selected) = match load_selected(
        config_path,
        &args.rules,
        &args.select,
        &args.exclude,
        &reports,
    ) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let started_at = chrono::Utc::now();
    let started = std::time::Instant::now();
    let runs = runtime()?.block_on(async {
        let sources = Sources::new(&config.sources, config.secrets.clone());
        warn_privileged(&sources, &selected).await;
        let mut runs = Box::pin(crate::engine::run_rules(
            &selected,
            &sources,
            usize::from(args.concurrency),
        ));
        let finished = tokio::select! {
            runs = &mut runs => Some(runs),
            () = interrupted() => None,
        };
        if finished.is_none() {
            // Dropping the runs abandons their readers, which stop their queries on the
            // servers: wait for them on this runtime, as the daemon does, before exiting.
            drop(runs);
            eprintln!("interrupted: stopping the queries in flight");
            sources.settle(std::time::Duration::from_secs(5)).await;
        }
        finished
    });
    let Some(runs) = runs else {
        return Ok(ExitCode::from(130));
    };
    let text = match args.format {
        Format::Table => crate::report::render_table(&selected, &runs, args.limit),
        Format::Json => crate::report::render_json(&selected, &runs),
    };
    print!("{text}");
    let code = crate::report::exit_code(&runs);
    let at = crate::report::Invocation {
        config: &config.path,
        started_at,
        elapsed: started.elapsed(),
    };
    let reports = [
        args.junit.as_deref().map(|p| {
            (
                p,
                crate::report::check_junit(&selected, &runs, &at, args.limit),
            )
        }),
        args.output.as_deref().map(|p| {
            (
                p,
                crate::report::results::check(&selected, &runs, &at, code, args.limit),
            )
        }),
    ];
    if let Err(e) = crate::report::files::write(reports.iter().flatten()) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::from(code))
}

/// The first SIGINT or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            },
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Warns, as the daemon does, about each source the rules read whose role may do more than
/// read (README: Least privilege).
async fn warn_privileged(sources: &Sources, rules: &[Rule]) {
    let mut names: Vec<&str> = rules
        .iter()
        .flat_map(|r| r.datasets.iter().map(|d| d.source.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    // All at once: each probe opens its source's first connection, which the run then takes
    // from the pool, so none waits for another's connection to be set up.
    let found = futures_util::future::join_all(names.iter().map(|name| async move {
        match sources.get(name) {
            Some(source) => source.probe().await.ok().flatten(),
            None => None,
        }
    }))
    .await;
    for (name, power) in names.into_iter().zip(found) {
        if let Some(power) = power {
            eprintln!(
                "warning: source `{name}` connects with more than read rights ({power}): a check could change the database or write files on its server; give invariantd a read-only role (README: Least privilege)"
            );
        }
    }
}

fn test(config_path: &Path, args: TestArgs) -> anyhow::Result<ExitCode> {
    let reports = [args.junit.as_deref(), args.output.as_deref()];
    let (config, selected) = match load_selected(
        config_path,
        &args.rules,
        &args.select,
        &args.exclude,
        &reports,
    ) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let started_at = chrono::Utc::now();
    let started = std::time::Instant::now();
    let results = runtime()?.block_on(crate::rule_tests::run(&selected));
    print!("{}", crate::rule_tests::render(&results));
    let at = crate::report::Invocation {
        config: &config.path,
        started_at,
        elapsed: started.elapsed(),
    };
    let reports = [
        args.junit
            .as_deref()
            .map(|p| (p, crate::rule_tests::junit(&results, &at))),
        args.output
            .as_deref()
            .map(|p| (p, crate::rule_tests::results_json(&results, &at))),
    ];
    if let Err(e) = crate::report::files::write(reports.iter().flatten()) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::from(crate::rule_tests::exit_code(&results)))
}

/// The rules the positional names and `--select` select, less those `--exclude` selects, in
/// the configuration's order (README: Selecting rules); all of them when none is given. A
/// term that selects nothing, or an empty selection, is an error.
fn select_rules(
    rules: Vec<Rule>,
    names: &[String],
    select: &[String],
    exclude: &[String],
) -> anyhow::Result<Vec<Rule>> {
    let include: Vec<String> = names.iter().chain(select).cloned().collect();
    let selection = Selection::parse(&include, exclude).map_err(anyhow::Error::msg)?;
    match selection.select(&rules, None).map_err(anyhow::Error::msg)? {
        None => Ok(rules),
        Some(selected) => Ok(selected.into_iter().cloned().collect()),
    }
}
