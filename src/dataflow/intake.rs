//! The start of a run, full or update: this worker reads its share of the
//! input, and every worker agrees on the outcome — the same input listing
//! in every process, no read error anywhere, rejected lines within the
//! limit — before any stage trains on it.

use super::exchange::Comm;
use super::read::{self, Share, read_share};
use super::{Failure, WorkerContext};
use crate::stats::ReadStats;
use crate::storage::join;

/// Every process must see the same input; the first worker of each process
/// marks the model directory (to tell later whether the processes share it).
pub fn agree_on_input(comm: &mut Comm, ctx: &WorkerContext) -> Result<(), Failure> {
    let first_of_process = comm.index % (comm.peers / ctx.processes) == 0;
    let mut setup_error = None;
    if let (true, Some(out)) = (first_of_process, &ctx.output) {
        let marker = join(&out.parts_dir, &format!(".process-{}", ctx.process));
        setup_error = out.store.create(&marker).and_then(|f| f.finish().map_err(|e| format!("{marker}: {e}"))).err();
    }
    let listings = comm.all_gather("input listing", (ctx.process, ctx.inputs.len(), ctx.listing, setup_error));
    for (process, files, listing, error) in listings {
        if let Some(e) = error {
            return Err(Failure::Output(e));
        }
        if listing != ctx.listing {
            return Err(Failure::Input(format!(
                "process {process} sees other input files ({files}) than process {} ({}): every process must see the same --input",
                ctx.process,
                ctx.inputs.len()
            )));
        }
    }
    Ok(())
}

/// True if every process wrote its marker into the model directory worker 0
/// sees (only worker 0 looks).
pub fn output_is_shared(comm: &Comm, ctx: &WorkerContext) -> bool {
    comm.index == 0
        && ctx.output.as_ref().is_some_and(|out| {
            (0..ctx.processes).all(|p| {
                let marker = join(&out.parts_dir, &format!(".process-{p}"));
                matches!(out.store.stat(&marker), Ok(Some(_)))
            })
        })
}

/// Reads the units of this worker's share; a failure leaves an empty share
/// and the error, to be agreed on ([`agree_on_read`]).
pub fn read_own_share(comm: &Comm, ctx: &WorkerContext) -> (Share, Option<Failure>) {
    let mine = ctx.shares.get(comm.index).map(Vec::as_slice).unwrap_or(&[]);
    let input = read::Input { store: &ctx.store, files: &ctx.inputs, units: &ctx.units };
    match read_share(&ctx.plan, &input, mine, ctx.show_rejected, &ctx.bytes_read) {
        Ok(share) => (share, None),
        Err(e) => (Share::empty(&ctx.plan), Some(Failure::Input(e))),
    }
}

/// Every worker's read statistics merged; an error anywhere, or too many
/// rejected lines, fails every worker.
pub fn agree_on_read(
    comm: &mut Comm,
    ctx: &WorkerContext,
    share: &mut Share,
    error: Option<Failure>,
) -> Result<ReadStats, Failure> {
    let gathered = comm.all_gather("read: outcome", (share.stats.clone(), error.map(|e| e.to_string())));
    let mut stats = ReadStats::default();
    for (s, error) in gathered {
        if let Some(e) = error {
            return Err(Failure::Input(e));
        }
        stats.merge(s, ctx.show_rejected);
    }
    stats.resolve_lines();
    share.stats = ReadStats::default();
    if ctx.max_rejected.exceeded(stats.rejected_total(), stats.lines) {
        return Err(Failure::TooManyRejected(Box::new(stats)));
    }
    Ok(stats)
}
