//! How points of a search space become vectors the GP works with, and back.
//!
//! Every parameter is one coordinate. Floats and ints sit in [0, 1] through
//! [`Distribution::to_unit`] (log scale where `log`; ints and stepped floats widened by half a
//! step so every lattice value owns an equal cell, and encoded at the centre of that cell). A
//! categorical coordinate holds the index of its choice; the kernel compares such coordinates
//! only for equality.
//!
//! A conditional parameter that does not apply to a point (momentum under AdamW) sits at a
//! constant: [`INACTIVE_NUMERIC`] for a numeric coordinate, [`INACTIVE_CHOICE`] (no choice
//! index) for a categorical one. Two points that differ only in parameters that apply to
//! neither are then the same vector, and the acquisition is searched over such canonical
//! vectors only ([`Encoding::canonical`]).

use crate::space::{Distribution, ParamSet, ParamValue, SearchSpace};

/// Discrete coordinates with at most this many values are optimised by trying every value.
pub const MAX_ENUMERATED: usize = 64;

/// Where a numeric coordinate sits when its parameter does not apply.
pub const INACTIVE_NUMERIC: f64 = 0.5;
/// Where a categorical coordinate sits when its parameter does not apply: no choice's index,
/// so it equals no active choice under the kernel's Hamming distance.
pub const INACTIVE_CHOICE: f64 = -1.0;

/// One condition in encoded terms: coordinate `child` applies only when the choice index at
/// coordinate `parent` is one of `allowed`.
#[derive(Debug, Clone, PartialEq)]
struct EncodedCondition {
    child: usize,
    parent: usize,
    allowed: Vec<f64>,
}

/// What kind of coordinate a parameter is.
#[derive(Debug, Clone, PartialEq)]
pub enum DimKind {
    /// A float without step: any point of [0, 1].
    Continuous,
    /// An int or stepped float: one point per lattice value. `units` lists the unit position
    /// of every value when there are at most [`MAX_ENUMERATED`] of them.
    Lattice { units: Option<Vec<f64>> },
    /// A categorical with `n` choices: the coordinate is the choice index. `nominal` when
    /// some choice is not a number (an optimiser's name, a flag), so the choices are kinds
    /// of thing rather than values on a scale.
    Categorical { n: usize, nominal: bool },
    /// A coordinate held at `value` (a parameter this trial was queued with): every
    /// candidate takes it and no move changes it.
    Fixed { value: f64 },
}

/// The encoding of one search space.
#[derive(Debug, Clone)]
pub struct Encoding {
    names: Vec<String>,
    dists: Vec<Distribution>,
    kinds: Vec<DimKind>,
    is_cat: Vec<bool>,
    conditions: Vec<EncodedCondition>,
}

impl Encoding {
    pub fn new(space: &SearchSpace) -> Encoding {
        let names = space.params().iter().map(|p| p.name.clone()).collect();
        let dists: Vec<Distribution> = space.params().iter().map(|p| p.dist.clone()).collect();
        let kinds: Vec<DimKind> = dists.iter().map(kind_of).collect();
        let is_cat = kinds.iter().map(|k| matches!(k, DimKind::Categorical { .. })).collect();
        let index = |name: &str| space.params().iter().position(|p| p.name == name);
        let conditions = space
            .conditions()
            .iter()
            .filter_map(|c| {
                let (child, parent) = (index(&c.param)?, index(&c.parent)?);
                let allowed = c.values.iter().filter_map(|v| dists[parent].to_internal(v)).collect();
                Some(EncodedCondition { child, parent, allowed })
            })
            .collect();
        Encoding { names, dists, kinds, is_cat, conditions }
    }

    /// Whether coordinate `d` applies to the vector `x` (its parents, earlier coordinates,
    /// hold allowed choices; a parent that does not apply holds none).
    pub fn is_active_dim(&self, d: usize, x: &[f64]) -> bool {
        self.conditions.iter().filter(|c| c.child == d).all(|c| c.allowed.iter().any(|a| (x[c.parent] - a).abs() < 0.5))
    }

    /// Sets every coordinate that does not apply to `x` to its constant, in order (so a
    /// child of a parameter that does not apply does not apply either).
    pub fn canonical(&self, x: &mut [f64]) {
        if self.conditions.is_empty() {
            return;
        }
        for d in 0..x.len() {
            if !self.is_active_dim(d, x) {
                x[d] = if self.is_cat[d] { INACTIVE_CHOICE } else { INACTIVE_NUMERIC };
            }
        }
    }

    /// Whether some parameter applies only under a condition.
    pub fn has_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    pub fn dims(&self) -> usize {
        self.kinds.len()
    }

    pub fn kinds(&self) -> &[DimKind] {
        &self.kinds
    }

    /// Which coordinates are categorical (what the kernel needs).
    pub fn is_categorical(&self) -> &[bool] {
        &self.is_cat
    }

    /// The vector of a point, or `None` when it lacks a parameter or holds a value the space
    /// does not know (e.g. a trial from before the space changed).
    pub fn encode(&self, set: &ParamSet) -> Option<Vec<f64>> {
        let mut x = Vec::with_capacity(self.dims());
        for (d, (name, dist)) in self.names.iter().zip(&self.dists).enumerate() {
            let Some(v) = set.get(name) else {
                // A parameter that does not apply to this point sits at its constant.
                if self.is_active_dim(d, &x_padded(&x, self.dims())) {
                    return None;
                }
                x.push(if self.is_cat[d] { INACTIVE_CHOICE } else { INACTIVE_NUMERIC });
                continue;
            };
            let c = match dist {
                Distribution::Categorical { .. } => dist.to_internal(v)?,
                _ => {
                    let u = dist.to_unit(v)?;
                    // Values snapped onto their lattice, so an int always encodes the same.
                    dist.to_unit(&dist.from_unit(u))?
                }
            };
            if !c.is_finite() {
                return None;
            }
            x.push(c);
        }
        // A value given for a parameter that does not apply is not part of the point.
        self.canonical(&mut x);
        Some(x)
    }

    /// The parameter values of a vector (rounded onto lattices, clamped to bounds), without
    /// the parameters that do not apply to it.
    pub fn decode(&self, x: &[f64]) -> ParamSet {
        let inactive: Vec<bool> = if self.conditions.is_empty() {
            vec![false; x.len()]
        } else {
            let mut y = x.to_vec();
            self.canonical(&mut y);
            (0..x.len()).map(|d| !self.is_active_dim(d, &y)).collect()
        };
        self.names
            .iter()
            .zip(&self.dists)
            .zip(x)
            .zip(inactive)
            .filter(|(_, inactive)| !inactive)
            .map(|(((name, dist), &c), _)| {
                let v = match dist {
                    Distribution::Categorical { choices } => {
                        let i = if c.is_finite() { c.round().clamp(0.0, (choices.len() - 1) as f64) as usize } else { 0 };
                        choices[i].clone()
                    }
                    _ => dist.from_unit(c),
                };
                (name.clone(), v)
            })
            .collect()
    }

    /// This encoding with the coordinates of `fixed`'s parameters held at their values (see
    /// [`DimKind::Fixed`]); parameters the space does not hold, or values it does not
    /// know, are left free.
    pub fn fixing(&self, fixed: &ParamSet) -> Encoding {
        let mut out = self.clone();
        for (d, (name, dist)) in self.names.iter().zip(&self.dists).enumerate() {
            let Some(v) = fixed.get(name) else { continue };
            let value = match dist {
                Distribution::Categorical { .. } => dist.to_internal(v),
                _ => dist.to_unit(v).and_then(|u| dist.to_unit(&dist.from_unit(u))),
            };
            if let Some(value) = value.filter(|c| c.is_finite()) {
                out.kinds[d] = DimKind::Fixed { value };
            }
        }
        out
    }

    /// `x` with its held coordinates set to their values ([`Encoding::fixing`]); the others
    /// as they are.
    pub fn held(&self, x: &[f64]) -> Vec<f64> {
        let mut y = x.to_vec();
        for (c, kind) in y.iter_mut().zip(&self.kinds) {
            if let DimKind::Fixed { value } = kind {
                *c = *value;
            }
        }
        self.canonical(&mut y);
        y
    }

    /// Whether some coordinate is held ([`Encoding::fixing`]).
    pub fn has_fixed(&self) -> bool {
        self.kinds.iter().any(|k| matches!(k, DimKind::Fixed { .. }))
    }

    /// Moves coordinate `d` of a vector onto a value it may take.
    pub fn snap_dim(&self, d: usize, c: f64) -> f64 {
        match &self.kinds[d] {
            DimKind::Fixed { value } => *value,
            DimKind::Continuous => c.clamp(0.0, 1.0),
            DimKind::Lattice { .. } => self.dists[d].to_unit(&self.dists[d].from_unit(c)).unwrap_or(0.5),
            DimKind::Categorical { n, .. } => {
                if c.is_finite() {
                    c.round().clamp(0.0, (*n - 1) as f64)
                } else {
                    0.0
                }
            }
        }
    }

    /// Moves every coordinate onto a value it may take, and those that do not apply onto
    /// their constants.
    pub fn snap(&self, x: &mut [f64]) {
        for (d, c) in x.iter_mut().enumerate() {
            *c = self.snap_dim(d, *c);
        }
        self.canonical(x);
    }

    /// The encoded point of a point `u` of the unit cube (a Sobol or uniform draw): numeric
    /// coordinates snapped onto their lattice, categoricals picking choice `floor(u · n)`.
    pub fn from_unit_cube(&self, u: &[f64]) -> Vec<f64> {
        let mut x: Vec<f64> = u
            .iter()
            .enumerate()
            .map(|(d, &ud)| match &self.kinds[d] {
                DimKind::Categorical { n, .. } => ((ud.clamp(0.0, 1.0) * *n as f64) as usize).min(n - 1) as f64,
                _ => self.snap_dim(d, ud),
            })
            .collect();
        self.canonical(&mut x);
        x
    }
}

/// `x` (the first coordinates of a vector being built) padded to `dims` with NaN: only
/// earlier coordinates, the parents, are read from it.
fn x_padded(x: &[f64], dims: usize) -> Vec<f64> {
    let mut y = x.to_vec();
    y.resize(dims, f64::NAN);
    y
}

/// Number of lattice values of an int or stepped float (`None` for other kinds).
fn lattice_size(dist: &Distribution) -> Option<u64> {
    match dist {
        Distribution::Int { low, high, step, .. } => Some(((high - low) / step) as u64 + 1),
        Distribution::Float { low, high, step: Some(s), .. } => Some(((high - low) / s + 1e-9).floor() as u64 + 1),
        _ => None,
    }
}

fn kind_of(dist: &Distribution) -> DimKind {
    match dist {
        Distribution::Categorical { choices } => DimKind::Categorical {
            n: choices.len(),
            nominal: choices.iter().any(|c| !matches!(c, ParamValue::Int(_) | ParamValue::Float(_))),
        },
        Distribution::Float { step: None, .. } => DimKind::Continuous,
        _ => {
            let size = lattice_size(dist).unwrap_or(u64::MAX);
            let units = (size as usize <= MAX_ENUMERATED).then(|| {
                let mut u: Vec<f64> = (0..size)
                    .filter_map(|k| {
                        let v = match dist {
                            Distribution::Int { low, step, .. } => ParamValue::Int(low + k as i64 * step),
                            Distribution::Float { low, step: Some(s), .. } => ParamValue::Float(low + k as f64 * s),
                            _ => return None,
                        };
                        dist.to_unit(&dist.from_unit(dist.to_unit(&v)?))
                    })
                    .collect();
                u.dedup();
                u
            });
            DimKind::Lattice { units }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Param;

    #[test]
    fn round_trip_and_lattice_centres() {
        let space = SearchSpace::new(vec![
            Param { name: "lr".into(), dist: Distribution::Float { low: 1e-5, high: 1e-1, log: true, step: None } },
            Param { name: "ep".into(), dist: Distribution::Int { low: 1, high: 4, step: 1, log: false } },
            Param { name: "bs".into(), dist: Distribution::Categorical { choices: vec![ParamValue::Int(8), ParamValue::Str("x".into())] } },
        ])
        .unwrap();
        let e = Encoding::new(&space);
        assert_eq!(e.is_categorical(), &[false, false, true]);
        // ep in [0.5, 4.5]: 1..4 sit at 1/8, 3/8, 5/8, 7/8.
        assert_eq!(e.kinds()[1], DimKind::Lattice { units: Some(vec![0.125, 0.375, 0.625, 0.875]) });
        let p: ParamSet =
            [("lr".to_string(), ParamValue::Float(1e-3)), ("ep".into(), ParamValue::Int(3)), ("bs".into(), ParamValue::Str("x".into()))]
                .into_iter()
                .collect();
        let x = e.encode(&p).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1] == 0.625 && x[2] == 1.0);
        assert!(SearchSpace::same_point(&e.decode(&x), &p));
        let mut y = vec![0.51, 0.3, 1.7];
        e.snap(&mut y);
        assert_eq!(&y[1..], &[0.375, 1.0]);
    }

    #[test]
    fn a_categorical_is_nominal_when_some_choice_is_not_a_number() {
        let cat = |choices: Vec<ParamValue>| Param { name: "c".into(), dist: Distribution::Categorical { choices } };
        let kind = |p: Param| Encoding::new(&SearchSpace::new(vec![p]).unwrap()).kinds()[0].clone();
        assert_eq!(kind(cat(vec![ParamValue::Int(16), ParamValue::Float(32.5)])), DimKind::Categorical { n: 2, nominal: false });
        assert_eq!(
            kind(cat(vec![ParamValue::Str("adam".into()), ParamValue::Str("sgd".into())])),
            DimKind::Categorical { n: 2, nominal: true }
        );
        assert_eq!(kind(cat(vec![ParamValue::Bool(false), ParamValue::Bool(true)])), DimKind::Categorical { n: 2, nominal: true });
        assert_eq!(kind(cat(vec![ParamValue::Int(1), ParamValue::Str("auto".into())])), DimKind::Categorical { n: 2, nominal: true });
    }
}
