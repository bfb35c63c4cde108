//! The queues the dashboard shows: the three job queues, read through apalis storages
//! of the same database the workers use, on either backend.

use super::{CompleteJob, DeliverJob, ImageJob, Job, JobContext, Queue, queue};
use crate::board::{Board, BoardBuilder};

/// The dashboard over every queue of this service. The first registered queue also
/// answers the cross-queue routes; both backends read every queue's jobs there.
pub fn board(ctx: &JobContext) -> Board {
    let builder = add::<ImageJob>(BoardBuilder::new(), ctx);
    let builder = add::<CompleteJob>(builder, ctx);
    add::<DeliverJob>(builder, ctx).build()
}

fn add<J: Job + Unpin>(builder: BoardBuilder, ctx: &JobContext) -> BoardBuilder {
    match queue::<J>(&ctx.db, &ctx.settings, 1) {
        Queue::Sqlite(storage) => builder.queue(J::QUEUE, storage),
        Queue::Postgres(storage) => builder.queue(J::QUEUE, storage),
    }
}
