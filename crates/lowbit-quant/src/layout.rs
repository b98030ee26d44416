//! [`GroupLayout`]: how a spec divides a tensor of a given shape into the groups that share a
//! scale. The CPU engine and the GPU kernels (lowbit-nn's `kernel_plan`) both start from it.

use crate::error::{QuantError, Result};
use crate::spec::{Granularity, QuantSpec};

/// What a group is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// One group: the whole tensor.
    PerTensor,
    /// One group per index along the axis (a channel: `outer · inner` elements).
    PerChannel,
    /// Blocks of [`GroupLayout::block`] consecutive indices along the axis (the last block of
    /// each row may be shorter), for every (outer, inner) position; whole-axis groups are one
    /// block as long as the axis.
    Blocks,
}

/// The groups of a spec on a tensor: the tensor seen as `(outer, len, inner)` around the
/// spec's axis (per tensor: `(1, n, 1)`), the kind of group and the shape of the scales.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    /// Elements of the tensor.
    pub n: usize,
    /// Product of the dimensions before the axis.
    pub outer: usize,
    /// Length of the axis.
    pub len: usize,
    /// Product of the dimensions after the axis.
    pub inner: usize,
    /// The axis, resolved (0 for per tensor).
    pub axis: usize,
    /// What a group is.
    pub kind: GroupKind,
    /// Block length along the axis ([`GroupKind::Blocks`]; at most `len`, at least 1): the
    /// spec's block size, or `len` for whole-axis groups. `n` per tensor, `outer · inner` per
    /// channel (a channel's elements).
    pub block: usize,
    /// Blocks along the axis (`⌈len / block⌉`; 1 otherwise).
    pub blocks_per_axis: usize,
    /// Number of groups (= number of scales).
    pub n_groups: usize,
    /// The shape of the scale tensor.
    pub scale_shape: Vec<usize>,
}

/// `axis` of a tensor of `shape`, negative counting from the end.
pub(crate) fn resolve_axis(axis: isize, shape: &[usize]) -> Result<usize> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(QuantError::AxisOutOfRange {
            axis,
            rank: shape.len(),
            shape: shape.to_vec(),
        });
    }
    Ok(a as usize)
}

impl QuantSpec {
    /// The groups of this spec on a tensor of `shape`. Errors: the spec's axis out of the
    /// tensor's rank, a shape whose element count overflows `usize`.
    ///
    /// ```
    /// use lowbit_quant::{GroupKind, QuantSpec};
    /// let mx: QuantSpec = "mxfp4".parse()?; // blocks of 32 along the last axis
    /// let l = mx.layout(&[4, 100])?;
    /// assert_eq!((l.outer, l.len, l.inner), (4, 100, 1));
    /// assert_eq!((l.kind, l.block, l.blocks_per_axis), (GroupKind::Blocks, 32, 4));
    /// assert_eq!(l.scale_shape, [4, 4]);
    /// # Ok::<(), lowbit_quant::QuantError>(())
    /// ```
    pub fn layout(&self, shape: &[usize]) -> Result<GroupLayout> {
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(QuantError::LengthMismatch {
                op: "layout",
                what: "shape",
                expected: usize::MAX,
                got: usize::MAX,
            })?;
        let split = |axis: isize| -> Result<(usize, usize, usize, usize)> {
            let a = resolve_axis(axis, shape)?;
            Ok((
                a,
                shape[..a].iter().product(),
                shape[a],
                shape[a + 1..].iter().product(),
            ))
        };
        Ok(match self.granularity() {
            Granularity::PerTensor => GroupLayout {
                n,
                outer: 1,
                len: n,
                inner: 1,
                axis: 0,
                kind: GroupKind::PerTensor,
                block: n,
                blocks_per_axis: 1,
                n_groups: 1,
                scale_shape: vec![1],
            },
            Granularity::PerChannel { axis } => {
                let (a, outer, len, inner) = split(axis)?;
                GroupLayout {
                    n,
                    outer,
                    len,
                    inner,
                    axis: a,
                    kind: GroupKind::PerChannel,
                    block: outer * inner,
                    blocks_per_axis: 1,
                    n_groups: len,
                    scale_shape: vec![len],
                }
            }
            Granularity::PerBlock { axis, .. } | Granularity::WholeAxis { axis } => {
                let (a, outer, len, inner) = split(axis)?;
                let size = match self.granularity() {
                    Granularity::PerBlock { size, .. } => size,
                    _ => len.max(1),
                };
                let nb = len.div_ceil(size);
                let mut scale_shape = shape.to_vec();
                scale_shape[a] = nb;
                GroupLayout {
                    n,
                    outer,
                    len,
                    inner,
                    axis: a,
                    kind: GroupKind::Blocks,
                    block: size.min(len.max(1)),
                    blocks_per_axis: nb,
                    n_groups: outer * inner * nb,
                    scale_shape,
                }
            }
        })
    }
}
