//! Online backup: a consistent copy of a running store, written beside it while blocks keep
//! being committed.
//!
//! ```text
//!  Store ── one redb read transaction (the store as of one commit) ──► every table, row by row
//!        ──► <destination>.partial (a new redb file, one fsynced write transaction)
//!        ──► rename to <destination>           (a copy exists whole, or not at all)
//! ```
//!
//! redb's readers see the database as of the commit they began at, and writers go on beside
//! them (copy-on-write pages), so the copy costs the node a reader for its duration and the
//! disk space of the copy, never a pause in sealing. Copying the file's bytes instead would
//! not do: a commit during the copy rewrites the header the copy's first bytes hold. redb has
//! no backup call of its own, so the copy is written here, over the store's own tables.

use crate::tables::*;
use crate::{Result, StorageError, Store};
use alloy::primitives::B256;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction,
};
use std::path::{Path, PathBuf};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The file written.
    pub path: PathBuf,
    /// The head block of the copy.
    pub head: u64,
    /// Its hash.
    pub hash: B256,
    /// Rows copied, over every table.
    pub rows: u64,
    /// Size of the file written.
    pub bytes: u64,
}

/// One table copied, for a progress report.
#[derive(Debug, Clone, Copy)]
pub struct BackupProgress<'a> {
    /// The table's name.
    pub table: &'a str,
    /// Tables done, this one included.
    pub done: usize,
    /// Tables in all.
    pub tables: usize,
    /// Rows this table held.
    pub rows: u64,
}

/// Copies every row of `table` as `from` sees it into `to`; a table `from` never created is
/// left out (an empty store has none).
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64> {
    let source = match from.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(redb::Error::from(error).into()),
    };
    let mut target = to.open_table(table).map_err(redb::Error::from)?;
    let mut rows = 0;
    for entry in redb::ReadableTable::iter(&source).map_err(redb::Error::from)? {
        let (key, value) = entry.map_err(redb::Error::from)?;
        target
            .insert(key.value(), value.value())
            .map_err(redb::Error::from)?;
        rows += 1;
    }
    Ok(rows)
}

/// The store's tables, each copied by one call below. A table added to tables.rs and not
/// here fails every backup (the source lists a table the copy lacks), never silently.
const TABLES: usize = 14;

fn copy_all(
    from: &ReadTransaction,
    to: &WriteTransaction,
    progress: &mut dyn FnMut(BackupProgress<'_>),
) -> Result<u64> {
    let mut total = 0;
    let mut done = 0;
    let mut step = |table: &str, rows: Result<u64>| -> Result<()> {
        let rows = rows?;
        done += 1;
        total += rows;
        progress(BackupProgress {
            table,
            done,
            tables: TABLES,
            rows,
        });
        Ok(())
    };
    step("meta", copy_table(from, to, META))?;
    step("headers", copy_table(from, to, HEADERS))?;
    step("bodies", copy_table(from, to, BODIES))?;
    step("receipts", copy_table(from, to, RECEIPTS))?;
    step("block_hashes", copy_table(from, to, BLOCK_HASHES))?;
    step("block_numbers", copy_table(from, to, BLOCK_NUMBERS))?;
    step("tx_locations", copy_table(from, to, TX_LOCATIONS))?;
    step("log_addresses", copy_table(from, to, LOG_ADDRESSES))?;
    step("accounts", copy_table(from, to, ACCOUNTS))?;
    step("storage", copy_table(from, to, STORAGE))?;
    step("change_sets", copy_table(from, to, CHANGE_SETS))?;
    step("account_history", copy_table(from, to, ACCOUNT_HISTORY))?;
    step("storage_history", copy_table(from, to, STORAGE_HISTORY))?;
    step("codes", copy_table(from, to, CODES))?;
    assert_eq!(done, TABLES, "every table is copied");
    let copied = to.list_tables().map_err(redb::Error::from)?.count();
    let source = from.list_tables().map_err(redb::Error::from)?.count();
    if copied != source {
        return Err(StorageError::Corrupt(format!(
            "the store has {source} tables and the backup copies {copied}: a table is missing \
             from backup.rs"
        )));
    }
    Ok(total)
}

impl Store {
    /// Writes a consistent copy of the store to `destination`, a file that must not exist,
    /// while the store goes on committing. `progress` hears of each table as it is done.
    ///
    /// ### Correctness
    /// The copy is the store as of one commit (one read transaction): a head with every block,
    /// receipt, index and state row up to it, and the meta the node keeps beside them (the
    /// genesis, the rollup binding, Raft's applied position). It is written to
    /// `<destination>.partial`, fsynced, and renamed: a crash leaves the copy whole or absent,
    /// never a file that looks like a store and is not.
    pub fn backup(
        &self,
        destination: &Path,
        progress: &mut dyn FnMut(BackupProgress<'_>),
    ) -> Result<Backup> {
        if destination.exists() {
            return Err(StorageError::BackupTarget {
                path: destination.to_path_buf(),
                reason: "it exists already: name a new file".into(),
            });
        }
        let mut partial = destination.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        // A partial copy is what a crashed backup left: never a store.
        if partial.exists() {
            std::fs::remove_file(&partial).map_err(|error| StorageError::BackupTarget {
                path: partial.clone(),
                reason: format!("removing a crashed backup's partial copy: {error}"),
            })?;
        }
        let from = self.db.begin_read()?;
        let (head, hash) = crate::read_head(&from.open_table(META).map_err(redb::Error::from)?)?;
        let copy =
            Database::builder()
                .create(&partial)
                .map_err(|error| StorageError::BackupTarget {
                    path: partial.clone(),
                    reason: error.to_string(),
                })?;
        let mut to = copy.begin_write()?;
        to.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        let rows = copy_all(&from, &to, progress)?;
        to.commit()?;
        drop(copy);
        drop(from);
        std::fs::rename(&partial, destination).map_err(|error| StorageError::BackupTarget {
            path: destination.to_path_buf(),
            reason: format!("renaming the finished copy: {error}"),
        })?;
        if let Some(parent) = destination
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::File::open(parent)
                .and_then(|directory| directory.sync_all())
                .map_err(|error| StorageError::BackupTarget {
                    path: parent.to_path_buf(),
                    reason: format!("syncing the directory: {error}"),
                })?;
        }
        let bytes = std::fs::metadata(destination).map_or(0, |metadata| metadata.len());
        Ok(Backup {
            path: destination.to_path_buf(),
            head,
            hash,
            rows,
            bytes,
        })
    }
}
