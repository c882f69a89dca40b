//! A transaction: the only way to change the image. Every write is applied to the state tables
//! and appended to the change log; dropping it uncommitted rolls everything back.

use super::*;

/// One open transaction. Every write records a [`Change`] and marks its object for the Data
/// Guardian. Dropping it without [`Image::transact`] committing rolls everything back.
#[derive(Debug)]
pub struct Tx {
    /// The image's connection, inside `BEGIN IMMEDIATE`. `None` while lent (see [`Tx::lend`]).
    pub(crate) conn: Option<Connection>,
    /// The transaction's id: 0 until its row is written (see [`Tx::ensure_row`]).
    pub(crate) id: TxId,
    /// Who and why, for the `transactions` row.
    pub(crate) actor: String,
    pub(crate) note: String,
    /// Whether the `transactions` row is written: only once something changes, so a send that
    /// only reads costs no insert (and leaves no empty transaction).
    pub(crate) row: bool,
    /// Position of the next change within this transaction.
    pub(crate) seq: i64,
    /// Objects written in this transaction: each is checked against its schema before commit.
    pub(crate) touched: BTreeSet<Oid>,
    /// Savepoints opened so far, for unique names.
    pub(crate) savepoints: u64,
    /// Roll back instead of committing when nothing changed (a send that only read).
    pub(crate) discard_if_unchanged: bool,
    /// The image's object cache, lent for the transaction (fresh at its start; nobody else can
    /// commit while it runs). Lookups read through it for objects not in `touched`, whose
    /// committed state is their state here too; it never holds uncommitted state.
    pub(crate) cache: Option<cache::ObjectCache>,
}

/// A point inside a transaction to roll back to (see [`Tx::savepoint`]).
#[derive(Debug)]
pub struct Savepoint {
    pub(crate) name: String,
    pub(crate) seq: i64,
    pub(crate) touched: BTreeSet<Oid>,
    /// Whether the transaction's row existed: rolling back to here may take it away again.
    pub(crate) row: bool,
    pub(crate) id: TxId,
}

impl Tx {
    /// The transaction's id, once it has changed something (0 before: the row comes with the
    /// first change).
    pub fn id(&self) -> TxId {
        self.id
    }

    pub(crate) fn begin(&mut self) -> Result<(), ImageError> {
        // Cached like every statement on the commit path: parsing is a measurable part of it.
        self.conn()?
            .prepare_cached("BEGIN IMMEDIATE")?
            .execute([])?;
        Ok(())
    }

    /// Writes the `transactions` row if it is not written yet, and answers the id.
    pub(crate) fn ensure_row(&mut self) -> Result<TxId, ImageError> {
        if !self.row {
            let conn = self.conn()?;
            conn.prepare_cached(
                "INSERT INTO transactions (at, actor, note)
                 VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?1, ?2)",
            )?
            .execute(params![self.actor, self.note])?;
            self.id = TxId(conn.last_insert_rowid());
            self.row = true;
        }
        Ok(self.id)
    }

    pub(crate) fn conn(&self) -> Result<&Connection, ImageError> {
        self.conn.as_ref().ok_or(ImageError::InTransaction)
    }

    /// Moves the open transaction into a new owner (a sandbox store, which must own its state);
    /// this `Tx` is unusable until [`Tx::restore`] gives it back.
    pub fn lend(&mut self) -> Tx {
        Tx {
            conn: self.conn.take(),
            id: self.id,
            actor: self.actor.clone(),
            note: self.note.clone(),
            row: self.row,
            seq: self.seq,
            touched: std::mem::take(&mut self.touched),
            savepoints: self.savepoints,
            discard_if_unchanged: self.discard_if_unchanged,
            cache: self.cache.take(),
        }
    }

    /// Takes back what [`Tx::lend`] lent, with everything written meanwhile.
    pub fn restore(&mut self, lent: Tx) {
        self.conn = lent.conn;
        self.id = lent.id;
        self.row = lent.row;
        self.seq = lent.seq;
        self.touched = lent.touched;
        self.savepoints = lent.savepoints;
        self.cache = lent.cache;
    }

    pub(crate) fn db(&self) -> Result<Db<'_>, ImageError> {
        Ok(Db(self.conn()?))
    }

    pub(crate) fn record(&mut self, change: Change) -> Result<(), ImageError> {
        self.ensure_row()?;
        let conn = self.conn()?;
        log::apply(conn, &change)?;
        log::append(conn, self.id, self.seq, &change)?;
        self.seq += 1;
        self.touched.insert(change.oid());
        Ok(())
    }

    pub fn resolve(&self, r: &ObjRef) -> Result<Oid, ImageError> {
        self.db()?.resolve(r)
    }

    pub fn lookup(&self, receiver: Oid, selector: &str) -> Result<Option<Found>, ImageError> {
        let graph = Cached {
            db: self.db()?,
            cache: self.cache.as_ref(),
            written: Some(&self.touched),
        };
        Ok(object::lookup(&graph, receiver, selector)?)
    }

    pub fn dispatch(&self, receiver: Oid, selector: &str) -> Result<Dispatch, ImageError> {
        // A slot found means the receiver exists; only a miss needs asking whether it does.
        let found = self.lookup(receiver, selector)?;
        if found.is_none() {
            self.db()?.existing(receiver)?;
        }
        outcome(found, receiver, selector)
    }

    pub fn named(&self, name: &str) -> Result<Option<Oid>, ImageError> {
        self.db()?.named(name)
    }

    /// Asks [`Image::transact`] to roll back rather than commit if this transaction ends up
    /// changing nothing.
    pub fn discard_if_unchanged(&mut self) {
        self.discard_if_unchanged = true;
    }

    pub fn parents(&self, oid: Oid) -> Result<Vec<Oid>, ImageError> {
        let db = self.db()?;
        db.existing(oid)?;
        db.parents(oid)
    }

    pub fn own_slot(&self, oid: Oid, name: &str) -> Result<Option<Slot>, ImageError> {
        self.db()?.own_slot(oid, name)
    }

    /// Every own slot of `oid`, values and methods.
    pub fn own_slots(&self, oid: Oid) -> Result<Vec<(String, Slot)>, ImageError> {
        let db = self.db()?;
        db.existing(oid)?;
        db.own_slots(oid)
    }

    pub fn method_wasm(&self, id: MethodId) -> Result<Vec<u8>, ImageError> {
        methods::wasm(self.conn()?, id)
    }

    /// Starts a new blob in this transaction: write its bytes, then [`BlobWriter::finish`].
    pub fn blob_writer(&mut self, chunk_size: usize) -> Result<BlobWriter<'_>, ImageError> {
        let tx = self.ensure_row()?;
        BlobWriter::begin(self.conn()?, tx, chunk_size)
    }

    /// Stores a new version of `oid.selector` and points the slot at it.
    pub fn install_method(
        &mut self,
        oid: Oid,
        selector: &str,
        new: &NewMethod<'_>,
    ) -> Result<(MethodId, i64), ImageError> {
        self.db()?.existing(oid)?;
        let tx = self.ensure_row()?;
        let (id, version) = methods::insert(self.conn()?, tx, oid, selector, new)?;
        self.set_slot(oid, selector, Slot::Method(id))?;
        Ok((id, version))
    }

    /// Marks a point this transaction can roll back to without giving up the rest (a nested
    /// method call that fails undoes only its own writes).
    pub fn savepoint(&mut self) -> Result<Savepoint, ImageError> {
        self.savepoints += 1;
        let name = format!("batos_{}", self.savepoints);
        // Names repeat from one transaction to the next, so the statements cache well.
        self.conn()?
            .prepare_cached(&format!("SAVEPOINT {name}"))?
            .execute([])?;
        Ok(Savepoint {
            name,
            seq: self.seq,
            touched: self.touched.clone(),
            row: self.row,
            id: self.id,
        })
    }

    /// Keeps what was done since `savepoint`.
    pub fn release(&mut self, savepoint: Savepoint) -> Result<(), ImageError> {
        self.conn()?
            .prepare_cached(&format!("RELEASE {}", savepoint.name))?
            .execute([])?;
        Ok(())
    }

    /// Undoes everything since `savepoint`, and only that.
    pub fn rollback_to(&mut self, savepoint: Savepoint) -> Result<(), ImageError> {
        let name = &savepoint.name;
        let conn = self.conn()?;
        conn.prepare_cached(&format!("ROLLBACK TO {name}"))?
            .execute([])?;
        conn.prepare_cached(&format!("RELEASE {name}"))?
            .execute([])?;
        self.seq = savepoint.seq;
        self.touched = savepoint.touched;
        self.row = savepoint.row;
        self.id = savepoint.id;
        Ok(())
    }

    /// The Data Guardian for one object, now rather than at commit.
    pub fn guard_object(&self, oid: Oid) -> Result<(), ImageError> {
        // A destroyed object has no slots and no parents: the lookup finds no schema for it.
        let Some(found) = self.lookup(oid, guardian::SCHEMA_SLOT)? else {
            return Ok(());
        };
        let Slot::Value(schema) = found.slot else {
            return Ok(());
        };
        let slots = self.db()?.own_values(oid)?;
        guardian::check_slots(&schema, &slots)
            .map_err(|violation| ImageError::SchemaViolation { oid, violation })
    }

    /// Clones: a new object with `parents` (usually one prototype), an optional unique name and
    /// the given value slots.
    pub fn create_object(
        &mut self,
        parents: &[Oid],
        name: Option<&str>,
        slots: Map<String, Value>,
    ) -> Result<Oid, ImageError> {
        for parent in parents {
            self.db()?.existing(*parent)?;
        }
        // The next id AUTOINCREMENT would give: past every oid ever used, undone ones included.
        let oid = Oid(self.conn()?.query_row(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'objects'), 0) + 1",
            [],
            |r| r.get(0),
        )?);
        self.record(Change::Create { oid })?;
        if let Some(name) = name {
            self.rename(oid, Some(name))?;
        }
        if !parents.is_empty() {
            self.set_parents(oid, parents.to_vec())?;
        }
        for (slot, value) in slots {
            self.set_slot(oid, &slot, Slot::Value(value))?;
        }
        Ok(oid)
    }

    pub fn set_slot(&mut self, oid: Oid, slot: &str, value: Slot) -> Result<(), ImageError> {
        if let Slot::Value(value) = &value {
            check_value(slot, value)?;
        }
        self.db()?.existing(oid)?;
        let before = self.db()?.own_slot(oid, slot)?;
        self.record(Change::Slot {
            oid,
            slot: slot.to_owned(),
            before,
            after: Some(value),
        })
    }

    pub fn remove_slot(&mut self, oid: Oid, slot: &str) -> Result<(), ImageError> {
        self.db()?.existing(oid)?;
        let before = self.db()?.own_slot(oid, slot)?;
        if before.is_none() {
            return Err(ImageError::NoSuchSlot {
                oid,
                slot: slot.to_owned(),
            });
        }
        self.record(Change::Slot {
            oid,
            slot: slot.to_owned(),
            before,
            after: None,
        })
    }

    /// Replaces the ordered parents. Refuses unknown parents and anything that closes a cycle.
    pub fn set_parents(&mut self, oid: Oid, parents: Vec<Oid>) -> Result<(), ImageError> {
        self.db()?.existing(oid)?;
        for parent in &parents {
            self.db()?.existing(*parent)?;
        }
        let db = self.db()?;
        if object::would_cycle(|o| db.parents(o), oid, &parents)? {
            return Err(ImageError::ParentCycle {
                child: oid,
                parents,
            });
        }
        let before = self.db()?.parents(oid)?;
        self.record(Change::Parents {
            oid,
            before,
            after: parents,
        })
    }

    /// Names or renames an object (`None` removes its name). Names are unique and not all digits
    /// (those are ids).
    pub fn rename(&mut self, oid: Oid, name: Option<&str>) -> Result<(), ImageError> {
        self.db()?.existing(oid)?;
        if let Some(name) = name {
            check_name(name)?;
            if let Some(holder) = self.db()?.named(name)?
                && holder != oid
            {
                return Err(ImageError::NameTaken {
                    name: name.to_owned(),
                    holder,
                });
            }
        }
        let before = self.db()?.name_of(oid)?;
        self.record(Change::Name {
            oid,
            before,
            after: name.map(str::to_owned),
        })
    }

    /// Applies the inverse of `change` (from transaction `target`) through the checked writes.
    pub(crate) fn apply_inverse(
        &mut self,
        target: TxId,
        change: &Change,
    ) -> Result<(), ImageError> {
        match change.inverse() {
            Change::Slot {
                oid, slot, after, ..
            } => match after {
                Some(value) => self.set_slot(oid, &slot, value),
                None => self.remove_slot(oid, &slot),
            },
            Change::Name { oid, after, .. } => self.rename(oid, after.as_deref()),
            Change::Parents { oid, after, .. } => self.set_parents(oid, after),
            Change::Destroy { oid } => {
                let children: i64 = self.conn()?.query_row(
                    "SELECT COUNT(*) FROM parents WHERE parent = ?1",
                    [oid.0],
                    |r| r.get(0),
                )?;
                if children > 0 {
                    return Err(ImageError::Irreversible {
                        tx: target,
                        reason: format!(
                            "object {oid}, which it created, is now a parent of {children} object(s)"
                        ),
                    });
                }
                self.record(Change::Destroy { oid })
            }
            Change::Create { oid } => self.record(Change::Create { oid }),
        }
    }

    /// The Data Guardian: every touched object that still exists must satisfy the schema it
    /// carries or inherits.
    pub(crate) fn guard_touched(&self) -> Result<(), ImageError> {
        for &oid in &self.touched {
            self.guard_object(oid)?;
        }
        Ok(())
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), ImageError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.parse::<i64>().is_ok() {
        "a number names an object by id"
    } else if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '.' || c == ',')
    {
        "it holds whitespace, a control character, `.` or `,`"
    } else {
        return Ok(());
    };
    Err(ImageError::BadName {
        name: name.to_owned(),
        reason,
    })
}
