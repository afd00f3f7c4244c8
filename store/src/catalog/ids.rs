//! The catalog's id → labels table: pages of slots, a page freed once every series on it is
//! gone (its directory with its last page), so that memory under series churn follows the live
//! series and their pages, not every id ever assigned.

use crate::labels::{Labels, SeriesId};

/// Ids per page. Series created together (one pod, one deploy) tend to die together, which
/// empties whole pages.
const PAGE: usize = 1024;
/// Pages per directory.
const DIR: usize = 1024;
/// Highest id the table holds: 2^40 (a million new series a second for 12 days short of 35
/// years). An id above it, which only a damaged or hostile file can carry, is refused, so that
/// it cannot make the table allocate for the ids below it.
pub(crate) const MAX_ID: SeriesId = 1 << 40;

#[derive(Debug)]
struct Page {
    /// Bit `i` set while slot `i` holds labels.
    bits: [u64; PAGE / 64],
    live: u32,
    slots: Box<[Option<Labels>]>,
}

type Dir = Box<[Option<Box<Page>>]>;

/// Labels by id, ids from 1; an id may be absent (removed, or lost to corruption).
#[derive(Debug, Default)]
pub(crate) struct IdTable {
    /// Directories of pages; one directory covers `PAGE * DIR` ids.
    dirs: Vec<Option<Dir>>,
    /// Highest id ever assigned or reserved; never decreases.
    max_id: SeriesId,
    len: u64,
    pages: usize,
}

/// `(directory, page, slot)` of `id`.
#[inline]
fn locate(id: SeriesId) -> Option<(usize, usize, usize)> {
    if id == 0 || id > MAX_ID {
        return None;
    }
    let i = (id - 1) as usize;
    Some((i / (PAGE * DIR), (i / PAGE) % DIR, i % PAGE))
}

impl IdTable {
    #[inline]
    fn page(&self, d: usize, p: usize) -> Option<&Page> {
        self.dirs.get(d)?.as_ref()?[p].as_deref()
    }

    /// The labels of `id`.
    #[inline]
    pub(crate) fn get(&self, id: SeriesId) -> Option<&Labels> {
        let (d, p, s) = locate(id)?;
        self.page(d, p)?.slots[s].as_ref()
    }

    /// True when `id` holds labels (the append path checks every sample: two small, hot
    /// arrays and one bit).
    #[inline]
    pub(crate) fn contains(&self, id: SeriesId) -> bool {
        locate(id).is_some_and(|(d, p, s)| {
            self.page(d, p)
                .is_some_and(|pg| pg.bits[s / 64] & (1u64 << (s % 64)) != 0)
        })
    }

    /// Highest id ever assigned or reserved.
    pub(crate) fn max_id(&self) -> SeriesId {
        self.max_id
    }

    /// Ids holding labels.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Raises the highest id to at least `id` (at most [`MAX_ID`]) without assigning it: ids up
    /// to it are never handed out again (a catalog file's range claims them even when they were
    /// removed).
    pub(crate) fn reserve(&mut self, id: SeriesId) {
        self.max_id = self.max_id.max(id.min(MAX_ID));
    }

    /// Stores `labels` under `id`; false when `id` is 0, above [`MAX_ID`] or taken.
    pub(crate) fn insert(&mut self, id: SeriesId, labels: Labels) -> bool {
        let Some((d, p, s)) = locate(id) else {
            return false;
        };
        if self.dirs.len() <= d {
            self.dirs.resize_with(d + 1, || None);
        }
        let dir = self.dirs[d].get_or_insert_with(|| (0..DIR).map(|_| None).collect());
        let page = match &mut dir[p] {
            Some(page) => page,
            empty => {
                self.pages += 1;
                empty.insert(Box::new(Page {
                    bits: [0; PAGE / 64],
                    live: 0,
                    slots: (0..PAGE).map(|_| None).collect(),
                }))
            }
        };
        if page.slots[s].is_some() {
            return false;
        }
        page.slots[s] = Some(labels);
        page.bits[s / 64] |= 1u64 << (s % 64);
        page.live += 1;
        self.max_id = self.max_id.max(id);
        self.len += 1;
        true
    }

    /// Takes the labels of `id` out, freeing its page when it was the page's last series (and
    /// the directory with its last page).
    pub(crate) fn remove(&mut self, id: SeriesId) -> Option<Labels> {
        let (d, p, s) = locate(id)?;
        let dir = self.dirs.get_mut(d)?.as_mut()?;
        let page = dir[p].as_mut()?;
        let labels = page.slots[s].take()?;
        page.bits[s / 64] &= !(1u64 << (s % 64));
        page.live -= 1;
        self.len -= 1;
        if page.live == 0 {
            dir[p] = None;
            self.pages -= 1;
            if dir.iter().all(Option::is_none) {
                self.dirs[d] = None;
            }
        }
        Some(labels)
    }

    /// `(id, labels)` with `after < id <= upto`, ascending; freed pages are skipped whole.
    pub(crate) fn range(
        &self,
        after: SeriesId,
        upto: SeriesId,
    ) -> impl Iterator<Item = (SeriesId, &Labels)> + '_ {
        let upto = upto.min(self.max_id);
        let first_dir = usize::try_from(after).unwrap_or(usize::MAX) / (PAGE * DIR);
        self.dirs
            .iter()
            .enumerate()
            .skip(first_dir)
            .filter_map(|(d, dir)| Some((d, dir.as_ref()?)))
            .flat_map(|(d, dir)| {
                dir.iter()
                    .enumerate()
                    .filter_map(move |(p, page)| Some(((d * DIR + p) * PAGE, page.as_deref()?)))
            })
            .skip_while(move |(base, _)| (*base + PAGE) as SeriesId <= after)
            .take_while(move |(base, _)| (*base as SeriesId) < upto)
            .flat_map(|(base, page)| {
                page.slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(s, l)| Some(((base + s) as SeriesId + 1, l.as_ref()?)))
            })
            .skip_while(move |(id, _)| *id <= after)
            .take_while(move |(id, _)| *id <= upto)
    }

    /// Pages allocated.
    #[cfg(test)]
    pub(crate) fn pages_allocated(&self) -> usize {
        self.pages
    }

    /// Approximate bytes of the table itself (directories, pages and bits; not the labels).
    pub(crate) fn table_bytes(&self) -> usize {
        let dirs = self.dirs.iter().filter(|d| d.is_some()).count();
        self.dirs.capacity() * size_of::<Option<Dir>>()
            + dirs * DIR * size_of::<Option<Box<Page>>>()
            + self.pages * (size_of::<Page>() + PAGE * size_of::<Option<Labels>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(i: u64) -> Labels {
        Labels::from_pairs([("__name__".to_string(), format!("m{i}"))])
    }

    #[test]
    fn pages_are_freed_and_ids_never_reused() {
        let mut t = IdTable::default();
        for id in 1..=3 * PAGE as u64 {
            assert!(t.insert(id, l(id)));
        }
        assert!(!t.insert(5, l(5)));
        assert!(!t.insert(0, l(0)));
        assert_eq!(t.pages_allocated(), 3);
        // empty the middle page, keep one series of the first
        for id in 2..=2 * PAGE as u64 {
            assert!(t.remove(id).is_some());
        }
        assert!(t.remove(7).is_none());
        assert_eq!(t.pages_allocated(), 2);
        assert_eq!(t.len(), 1 + PAGE as u64);
        assert_eq!(t.max_id(), 3 * PAGE as u64);
        assert!(t.contains(1) && !t.contains(2) && !t.contains(PAGE as u64 + 1));
        assert!(t.get(2).is_none() && t.get(1).is_some());
        let ids: Vec<SeriesId> = t.range(0, u64::MAX).map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 1 + PAGE);
        assert_eq!(ids[0], 1);
        assert_eq!(ids[1], 2 * PAGE as u64 + 1);
        let ids: Vec<SeriesId> = t
            .range(2 * PAGE as u64 + 3, 2 * PAGE as u64 + 5)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [2 * PAGE as u64 + 4, 2 * PAGE as u64 + 5]);
        t.reserve(10 * PAGE as u64);
        assert_eq!(t.max_id(), 10 * PAGE as u64);
        assert!(!t.contains(10 * PAGE as u64));
        // an id far above costs one directory and one page, one above MAX_ID is refused
        assert!(t.insert(MAX_ID, l(1)));
        assert!(t.contains(MAX_ID));
        assert_eq!(t.pages_allocated(), 3);
        assert!(!t.insert(MAX_ID + 1, l(1)));
        assert!(t.remove(MAX_ID).is_some());
        assert_eq!(t.pages_allocated(), 2);
    }
}
