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
    /// 2-D tiles of the matrices formed by the last two axes ([`GroupLayout::tiles`]).
    Tiles,
}

/// The tiles of a [`GroupKind::Tiles`] layout on a batch of `M × N` matrices (the last two
/// axes; a rank-1 tensor is one row, `M = 1`).
///
/// Tile `(t_r, t_c)` of matrix `b` is group `(b · grid_rows + t_r) · grid_cols + t_c`, so the
/// scale shape is the tensor's with the last two axes replaced by `[grid_rows, grid_cols]`
/// (a rank-1 tensor's by `[grid_cols]`). Element `(b, i, j)` lies in the tile's row
/// `i mod rows`, column `j mod cols`; its position in the tile-major order (stochastic
/// rounding numbers elements in it) is `group · rows · cols + (i mod rows) · cols + j mod cols`:
/// every tile has the positions of a full one, and the edge tiles leave the positions of their
/// missing elements unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGrid {
    /// Rows of the matrix (`M`).
    pub m: usize,
    /// Columns of the matrix (`N`).
    pub n: usize,
    /// Tile height: the spec's, cut to `M` (at least 1).
    pub rows: usize,
    /// Tile width: the spec's, cut to `N` (at least 1).
    pub cols: usize,
    /// Tiles down a matrix: `⌈M / rows⌉`.
    pub grid_rows: usize,
    /// Tiles across a matrix: `⌈N / cols⌉`.
    pub grid_cols: usize,
}

impl TileGrid {
    /// Elements of a full tile (`rows · cols`).
    pub fn tile_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The group of element `(i, j)` of matrix `b`.
    pub fn group_of(&self, b: usize, i: usize, j: usize) -> usize {
        (b * self.grid_rows + i / self.rows) * self.grid_cols + j / self.cols
    }

    /// The position of element `(i, j)` of matrix `b` in the tile-major order.
    pub fn position_of(&self, b: usize, i: usize, j: usize) -> usize {
        self.group_of(b, i, j) * self.tile_len() + (i % self.rows) * self.cols + j % self.cols
    }
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
    /// The tiles ([`GroupKind::Tiles`]; `None` otherwise). For tiles, `outer` is the number of
    /// matrices, `len` = `M`, `inner` = `N`, `axis` the second-to-last axis (0 for rank ≤ 1),
    /// `block` a full tile's element count and `blocks_per_axis` the tiles per matrix.
    pub tiles: Option<TileGrid>,
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
        let too_big = || QuantError::LengthMismatch {
            op: "layout",
            what: "shape (its element or group count overflows usize)",
            expected: usize::MAX,
            got: usize::MAX,
        };
        // Checked products: with a zero dimension the element count is 0 while the product
        // of the other dimensions may still overflow.
        let prod = |dims: &[usize]| {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(too_big)
        };
        let n = prod(shape)?;
        let split = |axis: isize| -> Result<(usize, usize, usize, usize)> {
            let a = resolve_axis(axis, shape)?;
            Ok((a, prod(&shape[..a])?, shape[a], prod(&shape[a + 1..])?))
        };
        let layout = self.layout_unchecked(shape, n, &split, &prod)?;
        // Groups hold at least one element each, except in an empty tensor, whose per-channel
        // or per-block scales could still number in the trillions ([0, 2^40]): refuse those
        // rather than allocate them.
        if layout.n_groups > n.max(1 << 20) {
            return Err(QuantError::ScaleShape {
                op: "layout",
                expected: vec![n.max(1 << 20)],
                got: layout.scale_shape,
            });
        }
        Ok(layout)
    }

    fn layout_unchecked(
        &self,
        shape: &[usize],
        n: usize,
        split: &dyn Fn(isize) -> Result<(usize, usize, usize, usize)>,
        prod: &dyn Fn(&[usize]) -> Result<usize>,
    ) -> Result<GroupLayout> {
        let too_big = || QuantError::LengthMismatch {
            op: "layout",
            what: "shape (its element or group count overflows usize)",
            expected: usize::MAX,
            got: usize::MAX,
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
                tiles: None,
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
                    tiles: None,
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
                    n_groups: prod(&[outer, inner, nb])?,
                    scale_shape,
                    tiles: None,
                }
            }
            Granularity::PerTile { rows, cols } => {
                let rank = shape.len();
                let (outer, m, axis) = match rank {
                    0 | 1 => (1, 1, 0),
                    _ => (prod(&shape[..rank - 2])?, shape[rank - 2], rank - 2),
                };
                let n_cols = shape.last().copied().unwrap_or(1);
                let grid = TileGrid {
                    m,
                    n: n_cols,
                    rows: rows.min(m.max(1)),
                    cols: cols.min(n_cols.max(1)),
                    grid_rows: m.div_ceil(rows),
                    grid_cols: n_cols.div_ceil(cols),
                };
                let scale_shape = match rank {
                    0 | 1 => vec![grid.grid_cols],
                    _ => {
                        let mut s = shape[..rank - 2].to_vec();
                        s.extend([grid.grid_rows, grid.grid_cols]);
                        s
                    }
                };
                GroupLayout {
                    n,
                    outer,
                    len: m,
                    inner: n_cols,
                    axis,
                    kind: GroupKind::Tiles,
                    block: grid.rows.checked_mul(grid.cols).ok_or_else(too_big)?,
                    blocks_per_axis: grid
                        .grid_rows
                        .checked_mul(grid.grid_cols)
                        .ok_or_else(too_big)?,
                    n_groups: prod(&[outer, grid.grid_rows, grid.grid_cols])?,
                    scale_shape,
                    tiles: Some(grid),
                }
            }
        })
    }
}
