//! Reads: one reader (`Db`) over a connection for both `Image` and `Tx`, and the object graph
//! delegation walks (through the writer's cache where it may).

use super::*;

/// Reads over one connection (the image's, or an open transaction's). All reading SQL is here.
pub(crate) struct Db<'c>(pub(crate) &'c Connection);

impl Db<'_> {
    pub(crate) fn resolve(&self, r: &ObjRef) -> Result<Oid, ImageError> {
        let found: Option<i64> = match r {
            ObjRef::Id(id) => self
                .0
                .prepare_cached("SELECT oid FROM objects WHERE oid = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?,
            ObjRef::Name(name) => self
                .0
                .prepare_cached("SELECT oid FROM objects WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?,
        };
        found
            .map(Oid)
            .ok_or_else(|| ImageError::NoSuchObject(r.clone()))
    }

    pub(crate) fn existing(&self, oid: Oid) -> Result<(), ImageError> {
        self.resolve(&ObjRef::Id(oid.0)).map(|_| ())
    }

    pub(crate) fn named(&self, name: &str) -> Result<Option<Oid>, ImageError> {
        Ok(self
            .0
            .prepare_cached("SELECT oid FROM objects WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?
            .map(Oid))
    }

    pub(crate) fn name_of(&self, oid: Oid) -> Result<Option<String>, ImageError> {
        self.name_of_if_exists(oid)?
            .ok_or(ImageError::NoSuchObject(ObjRef::Id(oid.0)))
    }

    /// `None`: no such object; `Some(None)`: an object without a name.
    pub(crate) fn name_of_if_exists(&self, oid: Oid) -> Result<Option<Option<String>>, ImageError> {
        Ok(self
            .0
            .prepare_cached("SELECT name FROM objects WHERE oid = ?1")?
            .query_row([oid.0], |r| r.get(0))
            .optional()?)
    }

    pub(crate) fn own_slots(&self, oid: Oid) -> Result<Vec<(String, Slot)>, ImageError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT name, kind, value FROM slots WHERE oid = ?1")?;
        let mut rows = stmt.query([oid.0])?;
        let mut slots = Vec::new();
        while let Some(r) = rows.next()? {
            let slot = log::slot_from_columns(&r.get::<_, String>(1)?, &r.get::<_, String>(2)?)?;
            slots.push((r.get(0)?, slot));
        }
        Ok(slots)
    }

    pub(crate) fn own_values(&self, oid: Oid) -> Result<Map<String, Value>, ImageError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT name, kind, value FROM slots WHERE oid = ?1 ORDER BY name")?;
        let mut rows = stmt.query([oid.0])?;
        let mut map = Map::new();
        while let Some(r) = rows.next()? {
            if let Slot::Value(v) =
                log::slot_from_columns(&r.get::<_, String>(1)?, &r.get::<_, String>(2)?)?
            {
                map.insert(r.get(0)?, v);
            }
        }
        Ok(map)
    }

    pub(crate) fn state(&self, oid: Oid) -> Result<Option<replay::ObjectState>, ImageError> {
        let Some(name) = self.name_of_if_exists(oid)? else {
            return Ok(None);
        };
        let mut stmt = self
            .0
            .prepare_cached("SELECT name, kind, value FROM slots WHERE oid = ?1 ORDER BY name")?;
        let mut rows = stmt.query([oid.0])?;
        let mut slots = std::collections::BTreeMap::new();
        while let Some(r) = rows.next()? {
            let slot = log::slot_from_columns(&r.get::<_, String>(1)?, &r.get::<_, String>(2)?)?;
            slots.insert(r.get(0)?, slot);
        }
        Ok(Some(replay::ObjectState {
            name,
            parents: self.parents(oid)?,
            slots,
        }))
    }

    pub(crate) fn own_slot(&self, oid: Oid, name: &str) -> Result<Option<Slot>, ImageError> {
        let row: Option<(String, String)> = self
            .0
            .prepare_cached("SELECT kind, value FROM slots WHERE oid = ?1 AND name = ?2")?
            .query_row(params![oid.0, name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(kind, text)| log::slot_from_columns(&kind, &text))
            .transpose()
    }

    pub(crate) fn parents(&self, oid: Oid) -> Result<Vec<Oid>, ImageError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT parent FROM parents WHERE oid = ?1 ORDER BY position")?;
        let rows = stmt.query_map([oid.0], |r| r.get(0).map(Oid))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// What a send answers, given what lookup found.
pub(crate) fn outcome(
    found: Option<Found>,
    receiver: Oid,
    selector: &str,
) -> Result<Dispatch, ImageError> {
    Ok(match found {
        Some(Found {
            slot: Slot::Value(v),
            ..
        }) => Dispatch::Answer(v),
        Some(Found {
            holder,
            slot: Slot::Method(method),
        }) => Dispatch::Method { holder, method },
        None => Dispatch::DoesNotUnderstand {
            receiver,
            selector: selector.to_owned(),
        },
    })
}

/// The object graph for lookups: SQLite, with the writer's cache in front when there is one.
pub(crate) struct Cached<'c> {
    pub(crate) db: Db<'c>,
    pub(crate) cache: Option<&'c cache::ObjectCache>,
    /// Inside a transaction: the objects it wrote, read from SQLite (their state is not the
    /// committed one the cache holds).
    pub(crate) written: Option<&'c BTreeSet<Oid>>,
}

impl ObjectGraph for Cached<'_> {
    type Error = ImageError;

    #[inline]
    fn visit(
        &self,
        oid: Oid,
        name: &str,
        parents: &mut crate::object::Parents,
    ) -> Result<Option<Slot>, ImageError> {
        let cache = self
            .cache
            .filter(|_| !self.written.is_some_and(|w| w.contains(&oid)));
        let Some(cache) = cache else {
            if let Some(slot) = self.db.own_slot(oid, name)? {
                return Ok(Some(slot));
            }
            parents.extend(self.db.parents(oid)?);
            return Ok(None);
        };
        if let Some(answer) = cache.visit(oid, name, parents) {
            return Ok(answer);
        }
        if self.db.name_of_if_exists(oid)?.is_none() {
            return Ok(None);
        }
        cache.insert(oid, self.db.own_slots(oid)?, self.db.parents(oid)?);
        Ok(cache.visit(oid, name, parents).unwrap_or(None))
    }
}
