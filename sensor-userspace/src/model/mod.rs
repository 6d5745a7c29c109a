//! What the sensor knows of the host: the [`events`] it published, the [`process_table`] of
//! live and recent processes, and the entity [`graph`] (processes, files, sockets, users).

pub mod events;
pub mod graph;
pub mod process_table;
