//! The `ur` command: answer queries (`ur query`, `ur serve`) from the model
//! in Elasticsearch and move the model alias back (`ur rollback`).

use super::{CommandError, Exit, init_logging};
use crate::config::Engine;
use crate::es::{Es, EsArgs};
use crate::query::request::Query;
use crate::query::{Recommender, server};
use crate::runtime::block_on;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Universal Recommender queries and model operations on Elasticsearch.
///
/// Reads the same engine.json as ur-train (indexName, num, blacklistEvents,
/// fields, userBias, itemBias, returnSelf, date names...) and answers with
/// the UR's query semantics from the model ur-train indexed.
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
        /// Per-request deadline, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Point the model aliases back at the previous published model.
    Rollback,
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
    let loaded = Engine::load(&args.engine).map_err(CommandError::Usage)?;
    let config = args
        .es
        .config()
        .map_err(CommandError::Usage)?
        .ok_or_else(|| CommandError::Usage("--es-url is required".into()))?;
    let es = block_on(Es::connect(&config)).map_err(CommandError::Failed)?;
    let recommender = Recommender::new(es, loaded.engine);
    match args.command {
        Command::Query { json } => {
            let query = Query::parse(json.as_bytes()).map_err(CommandError::Usage)?;
            let answer = block_on(recommender.recommend(&query)).map_err(|e| CommandError::Failed(e.to_string()))?;
            println!("{answer}");
        }
        Command::Serve { listen, timeout_ms } => {
            block_on(server::serve(Arc::new(recommender), listen, Duration::from_millis(timeout_ms)))
                .map_err(CommandError::Failed)?;
        }
        Command::Rollback => {
            let (from, to) =
                crate::es::indices::rollback(&recommender.es, &recommender.engine).map_err(CommandError::Failed)?;
            eprintln!("rolled back `{}` from the model of {from} to the model of {to}", recommender.alias);
        }
    }
    Ok(())
}
