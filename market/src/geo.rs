//! Locations for physical jobs: the centre of a geohash cell and ground distances, in integers only.
//!
//! A location is a [`Point`] in micro-degrees. [`centre`] decodes a geohash cell (`protocol::types::Cell`) by
//! bisecting the ranges of micro-degrees in integers (exactly, rounded once at the end), so every node gets the
//! same point. [`distance_m`] is the equirectangular approximation of the ground distance on a sphere of the
//! Earth's mean radius (6,371,008.8 m):
//!
//! ```text
//! dy = Δlat,  dx = Δlon × cos(mean latitude)      (Δlon the short way round, across the antimeridian if shorter)
//! d  = √(dx² + dy²) × 0.11119508 m per micro-degree
//! ```
//!
//! The cosine comes from a table of `cos` at every whole degree in Q30 fixed point, interpolated linearly
//! (at most 4·10⁻⁵ off); the root is an integer square root of centimetres. Against the haversine distance the
//! result is within 0.2 % below 100 km at latitudes up to ±85° (0.01 % up to ±70°; the tests check 0.2 %); the
//! error grows toward the poles and with distance (the flat projection, not the arithmetic). Along a meridian or a
//! parallel the distance never falls as the points move apart, which is what ranking nearest providers needs.

use protocol::types::GEOHASH_ALPHABET;

/// A point on the Earth, micro-degrees of latitude (north positive) and longitude (east positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Point {
    /// Latitude in micro-degrees, −90,000,000 to 90,000,000 (values beyond are taken as the pole).
    pub lat_e6: i64,
    /// Longitude in micro-degrees, −180,000,000 to 180,000,000 (values beyond wrap around).
    pub lon_e6: i64,
}

/// Micro-degrees in a whole circle, half and quarter.
const FULL: i64 = 360_000_000;
const HALF: i64 = 180_000_000;
const QUARTER: i64 = 90_000_000;
const MICRO: i64 = 1_000_000;

/// The longest cell decoded: `protocol`'s 12 characters (60 bits; 30 per axis already resolve below a micro-degree).
const CELL_CHARS_MAX: usize = protocol::limits::CELL_CHARS_MAX;
// Up to 24 characters the bits of an axis fit in a u64 and the centre's arithmetic in an i128.
const _: () = assert!(CELL_CHARS_MAX <= 24);

/// Centimetres of ground per micro-degree of a great circle, Q32: 2π × 6,371,008.8 m / 360,000,000 is
/// 11.119508023 cm.
const CM_PER_MICRODEGREE_Q32: u64 = 47_757_923_308;

/// `cos` of every whole degree from 0 to 90, Q30 (2³⁰ is 1), rounded.
#[rustfmt::skip] // Seven a line rather than one.
const COS_Q30: [i64; 91] = [
    1_073_741_824, 1_073_578_288, 1_073_087_729, 1_072_270_298, 1_071_126_243, 1_069_655_912, 1_067_859_754,
    1_065_738_315, 1_063_292_242, 1_060_522_280, 1_057_429_273, 1_054_014_162, 1_050_277_989, 1_046_221_891,
    1_041_847_103, 1_037_154_959, 1_032_146_887, 1_026_824_413, 1_021_189_159, 1_015_242_840, 1_008_987_269,
    1_002_424_350, 995_556_083, 988_384_560, 980_911_966, 973_140_576, 965_072_759, 956_710_970, 948_057_759,
    939_115_760, 929_887_697, 920_376_381, 910_584_710, 900_515_665, 890_172_315, 879_557_810, 868_675_383,
    857_528_349, 846_120_104, 834_454_122, 822_533_958, 810_363_241, 797_945_680, 785_285_058, 772_385_229,
    759_250_125, 745_883_746, 732_290_163, 718_473_518, 704_438_018, 690_187_940, 675_727_625, 661_061_475,
    646_193_961, 631_129_609, 615_873_009, 600_428_808, 584_801_711, 568_996_477, 553_017_922, 536_870_912,
    520_560_366, 504_091_252, 487_468_587, 470_697_435, 453_782_903, 436_730_145, 419_544_355, 402_230_767,
    384_794_656, 367_241_333, 349_576_144, 331_804_471, 313_931_728, 295_963_357, 277_904_834, 259_761_657,
    241_539_355, 223_243_478, 204_879_599, 186_453_311, 167_970_228, 149_435_979, 130_856_211, 112_236_583,
    93_582_766, 74_900_443, 56_195_305, 37_473_049, 18_739_379, 0,
];

/// The centre of geohash cell `cell`; `""` (the whole world) is (0, 0). `None` if a character is not in the
/// geohash alphabet (lowercase only) or the cell is longer than 12 characters.
#[must_use]
pub fn centre(cell: &str) -> Option<Point> {
    if cell.len() > CELL_CHARS_MAX {
        return None;
    }
    // The bisection's choices: one bit per halving, longitude first, then alternating.
    let (mut lat, mut lon) = (Bisection::default(), Bisection::default());
    let mut longitude_next = true;
    for byte in cell.bytes() {
        let value = GEOHASH_ALPHABET.iter().position(|&letter| letter == byte)?;
        for bit in (0..5).rev() {
            let axis = if longitude_next { &mut lon } else { &mut lat };
            axis.halve((value >> bit) & 1 == 1);
            longitude_next = !longitude_next;
        }
    }
    Some(Point { lat_e6: lat.centre(-QUARTER, QUARTER), lon_e6: lon.centre(-HALF, HALF) })
}

/// The upper halves chosen along one axis (at most 30 of 60 bits).
#[derive(Default)]
struct Bisection {
    bits: u64,
    count: u32,
}

impl Bisection {
    fn halve(&mut self, upper: bool) {
        self.bits = (self.bits << 1) | u64::from(upper);
        self.count += 1;
    }

    /// The middle of the range left after the halvings of `[low, high]`, rounded to the nearest micro-degree:
    /// `low + (high − low) × (2 × bits + 1) / 2^(count + 1)`, exact before the rounding.
    fn centre(&self, low: i64, high: i64) -> i64 {
        let numerator = i128::from(high - low) * (2 * i128::from(self.bits) + 1);
        let denominator = 1i128 << (self.count + 1);
        low + i64::try_from((numerator + denominator / 2) / denominator).unwrap_or(0)
    }
}

/// `cos` of `micro_degrees` (taken as its absolute value, at most 90°), Q30, interpolated in the table.
fn cos_q30(micro_degrees: i64) -> i64 {
    let angle = micro_degrees.unsigned_abs().min(QUARTER as u64) as i64;
    let degree = (angle / MICRO).min(89);
    let fraction = angle - degree * MICRO;
    let (low, high) = (COS_Q30[degree as usize], COS_Q30[degree as usize + 1]);
    low - ((low - high) * fraction + MICRO / 2) / MICRO
}

/// The ground distance from `a` to `b` in metres, rounded (equirectangular; see the module docs for the error).
/// Latitudes beyond ±90° count as the pole, longitudes wrap around; any input gives an answer.
#[must_use]
pub fn distance_m(a: Point, b: Point) -> u64 {
    let (lat_a, lat_b) = (a.lat_e6.clamp(-QUARTER, QUARTER), b.lat_e6.clamp(-QUARTER, QUARTER));
    let mut dlon = a.lon_e6.rem_euclid(FULL).abs_diff(b.lon_e6.rem_euclid(FULL));
    if dlon > HALF as u64 {
        dlon = FULL as u64 - dlon;
    }
    let dlat = lat_a.abs_diff(lat_b);
    let cos = cos_q30((lat_a + lat_b) / 2).unsigned_abs();
    // Centimetres, rounded: Δlat (at most 1.8·10⁸) × 4.8·10¹⁰ fits in a u64; Δlon × cos in Q30 fits in one too.
    let dy = (dlat * CM_PER_MICRODEGREE_Q32 + (1 << 31)) >> 32;
    let dx = u64::try_from((u128::from(dlon * cos) * u128::from(CM_PER_MICRODEGREE_Q32) + (1 << 61)) >> 62)
        .unwrap_or(u64::MAX);
    // Each at most 2.0·10⁹ cm (half the circumference): the squares fit in a u64 together.
    let squares = dx.saturating_mul(dx).saturating_add(dy.saturating_mul(dy));
    (squares.isqrt() + 50) / 100
}

/// The distance in metres between the centres of geohash cells `a` and `b`; `None` if either is not a cell.
#[must_use]
pub fn cell_distance_m(a: &str, b: &str) -> Option<u64> {
    Some(distance_m(centre(a)?, centre(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RADIUS_M: f64 = 6_371_008.8;

    fn haversine_m(a: Point, b: Point) -> f64 {
        let radians = |micro: i64| (micro as f64 / 1e6).to_radians();
        let (lat_a, lat_b) = (radians(a.lat_e6), radians(b.lat_e6));
        let (dlat, dlon) = (lat_b - lat_a, radians(b.lon_e6) - radians(a.lon_e6));
        let h = (dlat / 2.0).sin().powi(2) + lat_a.cos() * lat_b.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * RADIUS_M * h.sqrt().asin()
    }

    /// The centre of a cell decoded the usual way, in floating point.
    fn centre_f64(cell: &str) -> (f64, f64) {
        let (mut lat, mut lon) = ((-90.0, 90.0), (-180.0, 180.0));
        let mut longitude_next = true;
        for byte in cell.bytes() {
            let value = GEOHASH_ALPHABET.iter().position(|&letter| letter == byte).unwrap();
            for bit in (0..5).rev() {
                let range: &mut (f64, f64) = if longitude_next { &mut lon } else { &mut lat };
                let middle = (range.0 + range.1) / 2.0;
                if (value >> bit) & 1 == 1 {
                    range.0 = middle;
                } else {
                    range.1 = middle;
                }
                longitude_next = !longitude_next;
            }
        }
        ((lat.0 + lat.1) / 2.0, (lon.0 + lon.1) / 2.0)
    }

    fn cell_strategy(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(GEOHASH_ALPHABET.to_vec()), 0..=max)
            .prop_map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn centres_of_known_cells() {
        assert_eq!(centre(""), Some(Point { lat_e6: 0, lon_e6: 0 }));
        // The first character splits the world into 8 × 4 cells of 45° × 45°.
        assert_eq!(centre("s"), Some(Point { lat_e6: 22_500_000, lon_e6: 22_500_000 }));
        assert_eq!(centre("0"), Some(Point { lat_e6: -67_500_000, lon_e6: -157_500_000 }));
        assert_eq!(centre("z"), Some(Point { lat_e6: 67_500_000, lon_e6: 157_500_000 }));
        // Berlin's Brandenburg Gate is in u33db (52.5163 N, 13.3777 E).
        let gate = centre("u33db").unwrap();
        assert!((gate.lat_e6 - 52_516_300).abs() < 25_000 && (gate.lon_e6 - 13_377_700).abs() < 25_000, "{gate:?}");
        for bad in ["a", "u33da", "U33DB", "u33d!", "é", "0123456789bcd"] {
            assert_eq!(centre(bad), None, "{bad}");
        }
        assert_eq!(cell_distance_m("u33db", "u33da"), None);
        assert_eq!(cell_distance_m("u33db", "u33db"), Some(0));
    }

    #[test]
    fn distances_between_known_cells_match_haversine() {
        // Neighbouring cells, cells across a city (Berlin, London, San Francisco, Sydney) and a region, across the
        // equator and the antimeridian, and near the North Pole.
        let pairs = [
            ("u33db", "u33dc"),
            ("u33db", "u33d8"),
            ("u33dbfcy", "u33dbfcz"),
            ("u33db", "u336x"),
            ("u33db", "u33q0"),
            ("u33db", "u36h0"),
            ("u33db", "u33ef"),
            ("r3gx2", "r3gr8"),
            ("gcpvj", "gcpuv"),
            ("s0000", "kpbpb"),
            ("zbpbp", "b0000"),
            ("u4pruy", "u4prvv"),
            ("upc", "upf"),
            ("9q8yy", "9q9p1"),
        ];
        for (a, b) in pairs {
            let (pa, pb) = (centre(a).unwrap(), centre(b).unwrap());
            let exact = haversine_m(pa, pb);
            let got = cell_distance_m(a, b).unwrap() as f64;
            assert!(exact < 100_000.0, "{a} {b}: {exact}");
            assert!((got - exact).abs() <= exact * 0.002 + 1.0, "{a} {b}: {got} m, haversine {exact} m");
            assert_eq!(cell_distance_m(a, b), cell_distance_m(b, a));
        }
        // A known distance: one degree of latitude is 111.195 km on the mean sphere.
        let one_degree = distance_m(Point { lat_e6: 10_000_000, lon_e6: 5 }, Point { lat_e6: 11_000_000, lon_e6: 5 });
        assert_eq!(one_degree, 111_195);
        // One degree of longitude at 60° is half of that.
        let at_60 =
            distance_m(Point { lat_e6: 60_000_000, lon_e6: 0 }, Point { lat_e6: 60_000_000, lon_e6: 1_000_000 });
        assert!(at_60.abs_diff(55_597) <= 1, "{at_60}");
    }

    #[test]
    fn any_point_gives_a_distance() {
        let extremes = [i64::MIN, -HALF - 1, -QUARTER, 0, QUARTER, HALF, FULL + 7, i64::MAX];
        for lat_a in extremes {
            for lon_a in extremes {
                for lat_b in extremes {
                    for lon_b in extremes {
                        let (a, b) = (Point { lat_e6: lat_a, lon_e6: lon_a }, Point { lat_e6: lat_b, lon_e6: lon_b });
                        // At most half the circumference along both axes.
                        assert!(distance_m(a, b) <= 28_400_000);
                    }
                }
            }
        }
    }

    proptest! {
        /// The integer centre is the floating-point centre rounded to the micro-degree.
        #[test]
        fn centres_match_floating_point(cell in cell_strategy(12)) {
            let point = centre(&cell).unwrap();
            let (lat, lon) = centre_f64(&cell);
            prop_assert!((point.lat_e6 as f64 - lat * 1e6).abs() <= 0.5 + 1e-6, "{cell} {point:?} {lat}");
            prop_assert!((point.lon_e6 as f64 - lon * 1e6).abs() <= 0.5 + 1e-6, "{cell} {point:?} {lon}");
        }

        /// Within 0.2 % (and 1 m) of haversine below 100 km at latitudes up to ±85° (1 % is promised).
        #[test]
        fn close_to_haversine_below_100_km(
            lat in -85_000_000i64..=85_000_000,
            lon in -180_000_000i64..180_000_000,
            metres in 0.0f64..100_000.0,
            bearing in 0.0f64..std::f64::consts::TAU,
        ) {
            // A point about `metres` away on `bearing` (floating point in the test only).
            let a = Point { lat_e6: lat, lon_e6: lon };
            let dlat = metres * bearing.cos() / RADIUS_M;
            let b_lat = ((lat as f64 / 1e6).to_radians() + dlat).to_degrees().clamp(-85.0, 85.0);
            let mean = ((lat as f64 / 1e6 + b_lat) / 2.0).to_radians();
            let dlon = (metres * bearing.sin() / RADIUS_M / mean.cos()).to_degrees();
            let b_lon = (lon as f64 + dlon * 1e6) as i64;
            let b = Point { lat_e6: (b_lat * 1e6) as i64, lon_e6: (b_lon + HALF).rem_euclid(FULL) - HALF };
            let exact = haversine_m(a, b);
            prop_assume!(exact < 100_000.0);
            let got = distance_m(a, b) as f64;
            prop_assert!((got - exact).abs() <= exact * 0.002 + 1.0, "{a:?} {b:?}: {got} vs {exact}");
            prop_assert_eq!(distance_m(a, b), distance_m(b, a));
        }

        /// Further along a meridian or a parallel is never nearer.
        #[test]
        fn monotone_along_each_axis(
            lat in -89_000_000i64..=89_000_000,
            lon in -180_000_000i64..180_000_000,
            step in 0i64..1_000_000,
            more in 0i64..1_000_000,
        ) {
            let a = Point { lat_e6: lat, lon_e6: lon };
            let north = |d: i64| Point { lat_e6: (lat + d).min(QUARTER), lon_e6: lon };
            prop_assert!(distance_m(a, north(step)) <= distance_m(a, north(step + more)));
            let east = |d: i64| Point { lat_e6: lat, lon_e6: lon + d };
            prop_assert!(distance_m(a, east(step)) <= distance_m(a, east(step + more)));
        }
    }
}
