//! A node's bounded index of open jobs, and the search a worker makes in it: jobs of the kinds it takes, whose
//! skills it has, within its reach and the job's radius, best paid first.
//!
//! Jobs are indexed by (kind, cell); a search visits the 3 × 3 block of geohash cells around the worker at the
//! finest length whose cells are at least as large as its reach (so the block covers every point within the
//! reach), plus jobs done anywhere (an empty cell). The index holds at most [`OPEN_JOBS_MAX`] jobs: when full,
//! a job whose bidding ends later evicts the one ending soonest.

use std::collections::{BTreeSet, HashMap};

use protocol::message::{Job, JobKind};
use protocol::types::{GEOHASH_ALPHABET, Skill};
use protocol::{Id, PublicKey};

use crate::geo::{self, Point};

/// Most open jobs one index holds.
pub const OPEN_JOBS_MAX: usize = 10_000;
/// Characters of a job's cell in its DHT key (about 39 km × 20 km).
pub const DHT_CELL_CHARS: usize = 4;

/// An open job in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub id: Id,
    pub poster: PublicKey,
    pub job: Job,
    /// The distance from the searching worker, m (set in search results when both have a cell).
    pub distance_m: Option<u64>,
    /// The centre of the job's cell (none: done anywhere).
    pub at: Option<Point>,
}

/// What a worker offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub kinds: Vec<JobKind>,
    pub skills: Vec<Skill>,
    /// Where the worker is; empty: anywhere (it then finds only jobs without a place, or all with no reach set).
    pub cell: protocol::types::Cell,
    /// How far it goes, m; 0: no limit.
    pub radius_m: u64,
}

/// The bounded index.
#[derive(Debug, Default)]
pub struct JobIndex {
    jobs: HashMap<Id, Open>,
    by_place: BTreeSet<(JobKind, String, Id)>,
    by_end: BTreeSet<(u64, Id)>,
}

/// The DHT key under which peers announce open jobs of `kind` near `cell`:
/// `blake3("kos/v1/job-dht" || 0x00 || kind code || the cell's first 4 characters)`.
pub fn dht_key(kind: JobKind, cell: &str) -> Id {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kos/v1/job-dht");
    hasher.update(&[0, kind as u8]);
    hasher.update(dht_cell(cell).as_bytes());
    Id(*hasher.finalize().as_bytes())
}

/// The part of a cell its DHT key names.
pub fn dht_cell(cell: &str) -> &str {
    cell.get(..DHT_CELL_CHARS.min(cell.len())).unwrap_or("")
}

/// Geohash of `point` with `chars` characters (integer bisection, as [`geo::centre`] decodes).
pub fn encode(point: Point, chars: usize) -> String {
    let (mut lat, mut lon) = ((-90_000_000i64, 90_000_000i64), (-180_000_000i64, 180_000_000i64));
    let (target_lat, target_lon) =
        (point.lat_e6.clamp(-90_000_000, 90_000_000), point.lon_e6.clamp(-180_000_000, 180_000_000));
    let mut out = String::with_capacity(chars);
    let mut even = true;
    for _ in 0..chars {
        let mut index = 0usize;
        for _ in 0..5 {
            let (range, target) = if even { (&mut lon, target_lon) } else { (&mut lat, target_lat) };
            let middle = range.0 + (range.1 - range.0) / 2;
            index <<= 1;
            if target >= middle {
                index |= 1;
                range.0 = middle;
            } else {
                range.1 = middle;
            }
            even = !even;
        }
        out.push(char::from(GEOHASH_ALPHABET[index]));
    }
    out
}

/// A cell's height and width in micro-degrees at `chars` characters.
fn cell_size_e6(chars: usize) -> (i64, i64) {
    let bits = 5 * chars as u32;
    let (lat_bits, lon_bits) = (bits / 2, bits.div_ceil(2));
    (180_000_000i64 >> lat_bits.min(62), 360_000_000i64 >> lon_bits.min(62))
}

/// The cells (at the finest length whose cells are at least `reach_m` across) of the 3 × 3 block around `at`;
/// `None` when the reach needs the whole world.
fn block_around(at: Point, cell_chars: usize, reach_m: u64) -> Option<Vec<String>> {
    let chars = (1..=cell_chars.min(8)).rev().find(|chars| {
        let (height, width) = cell_size_e6(*chars);
        let north = Point { lat_e6: at.lat_e6 + height, lon_e6: at.lon_e6 };
        let east = Point { lat_e6: at.lat_e6, lon_e6: at.lon_e6 + width };
        geo::distance_m(at, north) >= reach_m && geo::distance_m(at, east) >= reach_m
    })?;
    let (height, width) = cell_size_e6(chars);
    let mut cells: Vec<String> = [-1i64, 0, 1]
        .iter()
        .flat_map(|dy| [-1i64, 0, 1].map(|dx| (*dy, dx)))
        .map(|(dy, dx)| {
            let lon = (at.lon_e6 + dx * width + 180_000_000).rem_euclid(360_000_000) - 180_000_000;
            encode(Point { lat_e6: (at.lat_e6 + dy * height).clamp(-90_000_000, 89_999_999), lon_e6: lon }, chars)
        })
        .collect();
    cells.sort();
    cells.dedup();
    Some(cells)
}

impl JobIndex {
    /// An empty index.
    pub fn new() -> JobIndex {
        JobIndex::default()
    }

    /// Jobs indexed.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is indexed.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether `id` is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.jobs.contains_key(id)
    }

    /// Indexes an open job; `false` when it is there already, its bidding is over at `now_ms`, or the index is
    /// full of jobs ending no sooner.
    pub fn insert(&mut self, id: Id, poster: PublicKey, job: Job, now_ms: u64) -> bool {
        if self.jobs.contains_key(&id) || job.bids_until_ms <= now_ms {
            return false;
        }
        if self.jobs.len() >= OPEN_JOBS_MAX {
            match self.by_end.first().copied() {
                Some((end, soonest)) if end < job.bids_until_ms => {
                    self.remove(&soonest);
                }
                _ => return false,
            }
        }
        self.by_place.insert((job.kind, job.cell.as_str().to_owned(), id));
        self.by_end.insert((job.bids_until_ms, id));
        let at = (!job.cell.as_str().is_empty()).then(|| geo::centre(job.cell.as_str())).flatten();
        self.jobs.insert(id, Open { id, poster, job, distance_m: None, at });
        true
    }

    /// Drops a job (awarded, withdrawn); `true` if it was there.
    pub fn remove(&mut self, id: &Id) -> bool {
        let Some(open) = self.jobs.remove(id) else { return false };
        self.by_place.remove(&(open.job.kind, open.job.cell.as_str().to_owned(), *id));
        self.by_end.remove(&(open.job.bids_until_ms, *id));
        true
    }

    /// Drops the jobs whose bidding is over at `now_ms`; how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let over: Vec<Id> = self.by_end.iter().take_while(|(end, _)| *end <= now_ms).map(|(_, id)| *id).collect();
        for id in &over {
            self.remove(id);
        }
        over.len()
    }

    fn candidates(&self, kind: JobKind, prefix: &str) -> impl Iterator<Item = &Id> + '_ {
        let prefix = prefix.to_owned();
        self.by_place
            .range((kind, prefix.clone(), Id([0; 32]))..)
            .take_while(move |(k, cell, _)| *k == kind && cell.starts_with(prefix.as_str()))
            .map(|(_, _, id)| id)
    }

    /// The open jobs `profile` could take at `now_ms`, best paid first (then by id), at most `limit`.
    pub fn matching(&self, profile: &Profile, now_ms: u64, limit: usize) -> Vec<Open> {
        let worker = (!profile.cell.as_str().is_empty()).then(|| geo::centre(profile.cell.as_str())).flatten();
        let block = match (worker, profile.radius_m) {
            (Some(at), reach) if reach > 0 => block_around(at, profile.cell.as_str().len(), reach),
            _ => None,
        };
        // (reward, id, job, distance): cloned only for the `limit` best.
        let mut found: Vec<(u64, Id, &Open, Option<u64>)> = Vec::new();
        let mut kinds = profile.kinds.clone();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let ids: Vec<&Id> = match &block {
                // Jobs done anywhere, then those in the block's cells.
                Some(cells) => self
                    .by_place
                    .range((kind, String::new(), Id([0; 32]))..=(kind, String::new(), Id([0xff; 32])))
                    .map(|(_, _, id)| id)
                    .chain(cells.iter().flat_map(|cell| self.candidates(kind, cell)))
                    .collect(),
                None => self.candidates(kind, "").collect(),
            };
            for id in ids {
                let Some(open) = self.jobs.get(id) else { continue };
                let job = &open.job;
                if job.bids_until_ms <= now_ms
                    || !job.skills.as_slice().iter().all(|skill| profile.skills.contains(skill))
                {
                    continue;
                }
                let distance_m = match (worker, open.at) {
                    (Some(at), Some(place)) => Some(geo::distance_m(at, place)),
                    _ => None,
                };
                if let Some(distance) = distance_m
                    && ((profile.radius_m > 0 && distance > profile.radius_m)
                        || (job.radius_m > 0 && distance > u64::from(job.radius_m)))
                {
                    continue;
                }
                found.push((job.reward, open.id, open, distance_m));
            }
        }
        found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        found.dedup_by_key(|(_, id, _, _)| *id);
        found.truncate(limit);
        found.into_iter().map(|(_, _, open, distance_m)| Open { distance_m, ..open.clone() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::{AwardRule, Empty, Evidence};
    use protocol::types::{BoundedVec, Cell, Text, TokenId};

    fn job(kind: JobKind, cell: &str, reward: u64, skills: &[&str], ends: u64) -> Job {
        Job {
            kind,
            title: Text::new("t").unwrap(),
            text: Text::new("").unwrap(),
            needs: BoundedVec::default(),
            skills: BoundedVec::new(skills.iter().map(|skill| Skill::new(*skill).unwrap()).collect()).unwrap(),
            cell: Cell::new(cell).unwrap(),
            radius_m: 0,
            token: TokenId::new("credit").unwrap(),
            reward,
            collateral: 0,
            slash_ppm: 0,
            tier: 0,
            guild: BoundedVec::default(),
            rule: AwardRule::LowestPrice,
            per_km: 0,
            evidence: Evidence::Acceptance(Empty),
            bids_until_ms: ends,
            deadline_ms: ends + 1,
        }
    }

    fn id(n: u32) -> Id {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        Id(bytes)
    }

    #[test]
    fn encode_inverts_centre() {
        for cell in ["u33db", "u33dbfc", "9q8yy", "s0000", "zzzzzz", "00000"] {
            let centre = geo::centre(cell).unwrap();
            assert_eq!(encode(centre, cell.len()), cell);
        }
    }

    #[test]
    fn finds_near_jobs_with_the_skills_best_paid_first_and_not_far_ones() {
        let mut index = JobIndex::new();
        let poster = PublicKey([1; 32]);
        // Berlin: u33db (Mitte), u33dc next to it, u33d8 a few km south; Hamburg u1x0 is 250 km away.
        assert!(index.insert(id(1), poster, job(JobKind::Maintenance, "u33dc", 5_000, &[], 100), 0));
        assert!(index.insert(id(2), poster, job(JobKind::Maintenance, "u33d8", 9_000, &["electrician"], 100), 0));
        assert!(index.insert(id(3), poster, job(JobKind::Maintenance, "u1x0d", 50_000, &[], 100), 0));
        assert!(index.insert(id(4), poster, job(JobKind::Compute, "", 7_000, &[], 100), 0));
        assert!(index.insert(id(5), poster, job(JobKind::Maintenance, "", 1_000, &[], 100), 0));
        assert!(!index.insert(id(6), poster, job(JobKind::Maintenance, "u33db", 1_000, &[], 10), 10), "bidding over");
        let mut profile = Profile {
            kinds: vec![JobKind::Maintenance],
            skills: vec![],
            cell: Cell::new("u33db").unwrap(),
            radius_m: 20_000,
        };
        let ids = |found: Vec<Open>| found.iter().map(|open| open.id).collect::<Vec<_>>();
        assert_eq!(ids(index.matching(&profile, 1, 10)), vec![id(1), id(5)]);
        profile.skills.push(Skill::new("electrician").unwrap());
        assert_eq!(ids(index.matching(&profile, 1, 10)), vec![id(2), id(1), id(5)]);
        profile.kinds.push(JobKind::Compute);
        assert_eq!(ids(index.matching(&profile, 1, 2)), vec![id(2), id(4)]);
        profile.radius_m = 0;
        assert_eq!(ids(index.matching(&profile, 1, 10)), vec![id(3), id(2), id(4), id(1), id(5)]);
        assert!(index.matching(&profile, 100, 10).is_empty(), "bidding over for all");
        assert_eq!(index.expire(100), 5);
        assert!(index.is_empty());
    }

    #[test]
    fn a_full_index_keeps_the_jobs_ending_last() {
        let mut index = JobIndex::new();
        let poster = PublicKey([1; 32]);
        for n in 0..OPEN_JOBS_MAX as u32 {
            assert!(index.insert(id(n), poster, job(JobKind::Text, "", 1, &[], 1_000 + u64::from(n)), 0));
        }
        assert!(!index.insert(id(u32::MAX), poster, job(JobKind::Text, "", 1, &[], 500), 0));
        assert!(index.insert(id(u32::MAX), poster, job(JobKind::Text, "", 1, &[], 5_000_000), 0));
        assert_eq!(index.len(), OPEN_JOBS_MAX);
        assert!(!index.contains(&id(0)), "the one ending soonest went");
        assert!(index.remove(&id(u32::MAX)));
        assert!(!index.remove(&id(u32::MAX)));
    }
}
