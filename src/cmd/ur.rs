//! The `ur` command: answer queries (`ur query`, `ur serve`) from the model
//! in Elasticsearch, move the model alias back (`ur rollback`), and run the
//! event server and its apps and keys (`ur events`, `ur app`, `ur
//! accesskey`).

use super::{CommandError, Exit, init_logging};
use crate::config::Engine;
use crate::es::{Es, EsArgs};
use crate::events::{self, EventsError, apps::Registry};
use crate::query::request::{Query, QueryLimits};
use crate::query::{Recommender, server};
use crate::runtime::block_on;
use crate::serving::ConnectionLimits;
use crate::stats::RejectLimit;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Universal Recommender's live half: queries, model operations and the
/// event server.
///
/// `query`, `serve` and `rollback` read the same engine.json as ur-train
/// (indexName, num, blacklistEvents, fields, userBias, itemBias, returnSelf,
/// date names...) and answer with the UR's query semantics from the model
/// ur-train indexed in Elasticsearch. `events`, `app`, `accesskey`, `import`
/// and `export` replace PredictionIO's event server and its `pio` commands:
/// events are stored as files ur-train reads.
#[derive(Parser, Debug)]
#[command(name = "ur", version, max_term_width = 100)]
pub struct Args {
    /// The UR's engine.json.
    #[arg(short, long, value_name = "FILE", default_value = "engine.json", global = true)]
    pub engine: PathBuf,

    #[command(flatten)]
    pub es: EsArgs,

    /// Print more (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Answer one query, e.g. `ur query '{"user": "u1", "num": 4}'`; prints
    /// `{"itemScores": [...]}`.
    Query {
        /// The query JSON (as sent to the PredictionServer's /queries.json).
        json: String,
    },
    /// Serve `POST /queries.json` (PredictionServer-compatible) and `GET /health`.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Per-request deadline (body read included), in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// The largest request body, in bytes.
        #[arg(long, default_value_t = 256 << 10)]
        max_body_bytes: usize,
        /// Requests served at once; more get 503 with Retry-After.
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
        /// `GET /health` also names the alias, its indices and the
        /// Elasticsearch version (otherwise it says ok or 503 only).
        #[arg(long)]
        health_details: bool,
        #[command(flatten)]
        connections: ConnectionLimits,
        #[command(flatten)]
        limits: QueryLimits,
    },
    /// Point the model aliases back at the previous published model.
    Rollback,
    /// Serve PredictionIO's event API (`POST /events.json`, ...), storing
    /// events under --root/<app>/ for ur-train.
    Events {
        #[command(flatten)]
        root: EventRoot,
        /// Address to listen on (PIO's EventServer port is 7070).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: std::net::SocketAddr,
        /// Close a file and start the next after this many seconds.
        #[arg(long, default_value_t = 300)]
        roll_seconds: u64,
        /// ... or once it holds this many MiB.
        #[arg(long, default_value_t = 128)]
        roll_mib: u64,
        /// The largest request body, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body_bytes: usize,
        /// Requests served at once; more get 503.
        #[arg(long, default_value_t = 1024)]
        max_in_flight: usize,
        /// Per-request deadline (body read included), in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[command(flatten)]
        connections: ConnectionLimits,
        #[command(flatten)]
        live: LiveArgs,
        /// Copy each closed partition to the same path under this root
        /// (`hdfs://namenode:port/path`, or a local path), in the background.
        #[arg(long, value_name = "URI")]
        ship: Option<String>,
        /// With --ship: delete a shipped local file once it is this many
        /// minutes old (default: keep).
        #[arg(long, value_name = "MINUTES", requires = "ship")]
        keep_local: Option<u64>,
    },
    /// Apps of the event server (like `pio app`).
    App {
        #[command(flatten)]
        root: EventRoot,
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Access keys of the event server's apps (like `pio accesskey`).
    Accesskey {
        #[command(flatten)]
        root: EventRoot,
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Validate PIO event JSON lines (a file or a directory, .gz too) like
    /// the event server and store them as the app's events (like `pio import`).
    /// With --es-url, the stored events then update the model of --engine
    /// like `ur events --es-url` (the command waits for them).
    Import {
        #[command(flatten)]
        root: EventRoot,
        #[arg(long)]
        app: String,
        /// A file or directory, local or hdfs://.
        path: String,
        /// Refused lines allowed before nothing is imported: a count or a
        /// percentage of the lines (as in ur-train).
        #[arg(long, value_name = "N|P%", default_value = "0")]
        max_rejected: String,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Write an app's events as PIO event JSON files (like `pio export`),
    /// readable by ur-train.
    Export {
        #[command(flatten)]
        root: EventRoot,
        #[arg(long)]
        app: String,
        /// A new directory, local or hdfs://.
        #[arg(long)]
        output: String,
    },
}

/// Query-time history: with `--es-url`, the events of one app update the
/// model of `--engine` in Elasticsearch within a second (`ur events`), or
/// once stored (`ur import`).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Query-time history (with --es-url)")]
pub struct LiveArgs {
    /// The app whose events feed the engine's model (default: the
    /// engine's `appName`).
    #[arg(long, value_name = "APP")]
    pub live_app: Option<String>,
    /// Events wait at most this long to be written in one bulk request.
    #[arg(long, default_value_t = 20)]
    pub live_delay_ms: u64,
    /// Item changes are remembered this long, to re-apply those a newly
    /// published model's training may have missed (at least the longest
    /// training); `ur events` re-applies the events of this window of its
    /// log at start (those a crash or an unreachable cluster left).
    #[arg(long, default_value_t = 24 * 60)]
    pub live_journal_minutes: u64,
}

/// The event server's storage root.
#[derive(clap::Args, Debug)]
pub struct EventRoot {
    /// Directory holding `_apps.json` and one directory of events per app.
    #[arg(long, env = "UR_EVENTS_ROOT", default_value = "events", global = true)]
    pub root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app; prints its access key.
    New { name: String },
    /// List the apps and their keys.
    List,
    /// Delete an app and its keys (its stored events stay).
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a key to an app, allowed only the given event names if any.
    New { app: String, events: Vec<String> },
    /// List the keys (of one app).
    List { app: Option<String> },
    /// Delete a key.
    Delete { key: String },
}

/// Runs `ur` and returns how it ended.
pub fn main_with(args: Args) -> Exit {
    init_logging(false, u8::from(args.verbose));
    match run(args) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::from(&e)
        }
    }
}

fn run(args: Args) -> Result<(), CommandError> {
    let command = match args.command {
        Command::Events {
            root,
            listen,
            roll_seconds,
            roll_mib,
            max_body_bytes,
            max_in_flight,
            timeout_ms,
            connections,
            live,
            ship,
            keep_local,
        } => {
            let ship = ship.map(|dest| events::ship::ShipOptions {
                dest,
                keep_local: keep_local.map(|m| Duration::from_secs(m * 60)),
            });
            let live = live_options(&args.engine, &args.es, &live, roll_seconds)?;
            let options = events::ServeOptions {
                root: root.root,
                listen,
                roll_after: Duration::from_secs(roll_seconds),
                roll_bytes: roll_mib << 20,
                limits: events::api::Limits {
                    max_body_bytes,
                    max_in_flight,
                    timeout: Duration::from_millis(timeout_ms),
                },
                connections,
                live,
                ship,
            };
            return block_on(events::serve(options)).map_err(command_error);
        }
        Command::App { root, command } => return app(&root.root, command).map_err(command_error),
        Command::Accesskey { root, command } => return accesskey(&root.root, command).map_err(command_error),
        Command::Import { root, app, path, max_rejected, live } => {
            // The import's files stay open up to an hour (its roll-over).
            let live = live_options(&args.engine, &args.es, &live, 3600)?;
            return import(&root.root, &app, &path, &max_rejected, live).map_err(command_error);
        }
        Command::Export { root, app, output } => {
            let done = events::export::export(&root.root, &app, &output).map_err(command_error)?;
            eprintln!(
                "exported {} events of `{app}` ({} bytes) in {} files to {output}",
                done.events, done.bytes, done.files
            );
            return Ok(());
        }
        other => other,
    };
    let loaded = Engine::load(&args.engine).map_err(CommandError::Usage)?;
    let config = args
        .es
        .config()
        .map_err(CommandError::Usage)?
        .ok_or_else(|| CommandError::Usage("--es-url is required".into()))?;
    if let Command::Serve { listen, timeout_ms, max_body_bytes, max_in_flight, health_details, connections, limits } =
        command
    {
        let options = server::ServeOptions {
            listen,
            timeout: Duration::from_millis(timeout_ms),
            max_body_bytes,
            max_in_flight,
            connections,
            limits,
            health_details,
        };
        return block_on(server::serve(config, loaded.engine, options))
            .map_err(|e| CommandError::Failed(e.to_string()));
    }
    let es = block_on(Es::connect(&config)).map_err(CommandError::Failed)?;
    let recommender = Recommender::new(es, loaded.engine);
    match command {
        Command::Query { json } => {
            let query = Query::parse(json.as_bytes()).map_err(CommandError::Usage)?;
            let answer = block_on(recommender.recommend(&query)).map_err(|e| CommandError::Failed(e.to_string()))?;
            println!("{answer}");
        }
        Command::Rollback => {
            let (from, to) =
                crate::es::indices::rollback(&recommender.es, &recommender.engine).map_err(CommandError::Failed)?;
            eprintln!("rolled back `{}` from the model of {from} to the model of {to}", recommender.alias);
        }
        Command::Serve { .. }
        | Command::Events { .. }
        | Command::App { .. }
        | Command::Accesskey { .. }
        | Command::Import { .. }
        | Command::Export { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// The live history settings of `ur events` and `ur import`, with `--es-url`.
fn live_options(
    engine: &Path,
    es: &EsArgs,
    live: &LiveArgs,
    roll_seconds: u64,
) -> Result<Option<events::live::LiveOptions>, CommandError> {
    let Some(config) = es.config().map_err(CommandError::Usage)? else {
        return Ok(None);
    };
    let engine = Engine::load(engine).map_err(CommandError::Usage)?.engine;
    let app = live.live_app.clone().or_else(|| engine.app_name.clone()).ok_or_else(|| {
        CommandError::Usage("--es-url: which app feeds the model? Give --live-app (the engine has no appName)".into())
    })?;
    Ok(Some(events::live::LiveOptions {
        es: config,
        engine,
        app,
        delay: Duration::from_millis(live.live_delay_ms),
        max_batch: 5000,
        // A file stays open at most --roll-seconds; a minute more for clocks.
        replay_before: Duration::from_secs(roll_seconds + 60),
        journal_for: Duration::from_secs(live.live_journal_minutes * 60),
    }))
}

fn command_error(e: EventsError) -> CommandError {
    match e {
        EventsError::Usage(m) => CommandError::Usage(m),
        EventsError::Storage(m) | EventsError::Refused(m) => CommandError::Failed(m),
    }
}

fn import(
    root: &Path,
    app: &str,
    path: &str,
    max_rejected: &str,
    live: Option<events::live::LiveOptions>,
) -> Result<(), EventsError> {
    let limit = RejectLimit::parse(max_rejected).map_err(|e| EventsError::Usage(format!("--max-rejected {e}")))?;
    let live = match live {
        Some(o) if o.app != app => {
            return Err(EventsError::Usage(format!(
                "--es-url: the engine's model is fed by the app `{}` (--live-app, or the engine's appName), not `{app}`",
                o.app
            )));
        }
        Some(o) => Some(
            block_on(events::live::Live::start(o))
                .map_err(|e| EventsError::Storage(format!("{e}; nothing imported")))?,
        ),
        None => None,
    };
    let mut stored = |chunk: &[events::validate::Accepted]| {
        if let Some((live, _)) = &live {
            live.send_blocking(live.ops_of(app, chunk));
        }
    };
    let done = events::import::import(root, app, path, limit, &mut stored)?;
    for (reason, (n, first)) in &done.rejected {
        eprintln!("rejected {n} line(s): {reason} (the first at {first})");
    }
    if limit.exceeded(done.rejected_total(), done.lines) {
        return Err(EventsError::Refused(format!(
            "{} of {} lines rejected, more than --max-rejected {limit} allows; nothing imported",
            done.rejected_total(),
            done.lines
        )));
    }
    eprintln!("imported {} of {} lines into `{app}`", done.stored, done.lines);
    let Some((live, task)) = live else { return Ok(()) };
    let d = block_on(live.drain(task, Duration::from_secs(30)));
    eprintln!(
        "applied {} of {} live updates to Elasticsearch ({} refused, {} failed writes retried)",
        d.applied, d.queued, d.refused, d.write_failures
    );
    if !d.complete() {
        return Err(EventsError::Storage(format!(
            "{} of {} live updates could not be applied to Elasticsearch. The events ARE stored: they reach \
             query-time history when `ur events --es-url` next starts (if within --live-journal-minutes), \
             and the model at the next training",
            d.queued - d.applied,
            d.queued
        )));
    }
    Ok(())
}

fn app(root: &Path, command: AppCommand) -> Result<(), EventsError> {
    match command {
        AppCommand::New { name } => {
            let key = events::app_new(root, &name)?;
            eprintln!("created app `{name}`; its access key:");
            println!("{key}");
        }
        AppCommand::List => {
            let r = Registry::load(root)?;
            for a in &r.apps {
                let keys: Vec<&str> = r.keys.iter().filter(|k| k.app == a.name).map(|k| k.key.as_str()).collect();
                println!("{}\t{}\t{}\t{}", a.name, a.id, a.created, keys.join(","));
            }
        }
        AppCommand::Delete { name } => {
            let keys = events::app_delete(root, &name)?;
            eprintln!("deleted app `{name}` and {keys} key(s); its events stay in {}", root.join(&name).display());
        }
    }
    Ok(())
}

fn accesskey(root: &Path, command: KeyCommand) -> Result<(), EventsError> {
    match command {
        KeyCommand::New { app, events } => println!("{}", events::key_new(root, &app, events)?),
        KeyCommand::List { app } => {
            for k in Registry::load(root)?.keys.iter().filter(|k| app.as_ref().is_none_or(|a| *a == k.app)) {
                let allowed = if k.events.is_empty() { "(all)".to_string() } else { k.events.join(",") };
                println!("{}\t{}\t{allowed}", k.key, k.app);
            }
        }
        KeyCommand::Delete { key } => {
            let k = events::key_delete(root, &key)?;
            eprintln!("deleted a key of app `{}`", k.app);
        }
    }
    Ok(())
}
