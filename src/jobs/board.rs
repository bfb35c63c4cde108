//! The queues the dashboard shows: the three job queues, read through apalis storages
//! of the same database the workers use.

use super::{CompleteJob, DeliverJob, ImageJob, Job, JobContext, storage};
use crate::board::{Board, BoardBuilder};

/// The dashboard over every queue of this service.
pub fn board(ctx: &JobContext) -> Board {
    let (db, settings) = (&ctx.db, &ctx.settings);
    // A PostgreSQL storage (`apalis_postgres::PostgresStorage<J>`) registers the same
    // way: `.queue(J::QUEUE, storage)`; the first one answers the cross-queue routes.
    BoardBuilder::new()
        .queue(ImageJob::QUEUE, storage::<ImageJob>(db, settings, 1))
        .queue(CompleteJob::QUEUE, storage::<CompleteJob>(db, settings, 1))
        .queue(DeliverJob::QUEUE, storage::<DeliverJob>(db, settings, 1))
        .build()
}
