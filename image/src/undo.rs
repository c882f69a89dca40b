//! Undo: a new transaction that reverts an earlier one, refused when a later one changed the
//! same thing.

use super::*;

impl Image {
    /// Reverts transaction `target` in a new transaction, unless a later one changed the same
    /// slots, names or parents (then [`ImageError::Conflict`]). Undo of an undo redoes.
    pub fn undo(&mut self, target: TxId, actor: &str) -> Result<TxId, ImageError> {
        if log::transaction(self.conn()?, target)?.is_none() {
            return Err(ImageError::NoSuchTransaction(target));
        }
        if target.0 == 1 {
            return Err(ImageError::Irreversible {
                tx: target,
                reason: "it is genesis".into(),
            });
        }
        let note = format!("undo {target}");
        let ((), tx) = self.transact(actor, &note, |tx| {
            // Checked inside the write transaction: no other writer can slip in between.
            let conn = tx.conn()?;
            let changes = log::changes_of(conn, target)?;
            for change in &changes {
                if let Some(later) = log::later_change_to(conn, target, change)? {
                    let what = match change {
                        Change::Slot { slot, .. } => format!("slot `{slot}`"),
                        Change::Name { .. } => "name".into(),
                        Change::Parents { .. } => "parents".into(),
                        Change::Create { .. } | Change::Destroy { .. } => "existence".into(),
                    };
                    return Err(ImageError::Conflict {
                        tx: target,
                        later,
                        oid: change.oid(),
                        what,
                    });
                }
            }
            for change in changes.iter().rev() {
                tx.apply_inverse(target, change)?;
            }
            Ok::<_, ImageError>(())
        })?;
        Ok(tx)
    }
}
