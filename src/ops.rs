//! The `ur` command: answer queries (`ur query`, `ur serve`) from the model
//! in Elasticsearch and move the model alias back (`ur rollback`).

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

/// Runs `ur` and returns the exit code.
pub fn main_with(args: Args) -> i32 {
    crate::cli::init_tracing(false, u8::from(args.verbose));
    let loaded = match Engine::load(&args.engine) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let config = match args.es.config() {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!("error: --es-url is required");
            return 2;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let es = match block_on(Es::connect(&config)) {
        Ok(es) => es,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let recommender = Recommender::new(es, loaded.engine);
    match args.command {
        Command::Query { json } => {
            let query = match Query::parse(json.as_bytes()) {
                Ok(q) => q,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            match block_on(recommender.recommend(&query)) {
                Ok(answer) => {
                    println!("{answer}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Command::Serve { listen, timeout_ms } => {
            let result = block_on(server::serve(Arc::new(recommender), listen, Duration::from_millis(timeout_ms)));
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Command::Rollback => match crate::es::indices::rollback(&recommender.es, &recommender.engine) {
            Ok((from, to)) => {
                eprintln!("rolled back `{}` from the model of {from} to the model of {to}", recommender.alias);
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}
