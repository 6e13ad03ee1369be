//! Bit-level helpers shared by the decoders (Arm ARM J1 "Shared pseudocode": DecodeBitMasks,
//! AddWithCarry, ConditionHolds, ShiftReg, ExtendReg).

/// `insn<hi:lo>` (width < 32).
#[inline(always)]
pub(crate) const fn bits(insn: u32, hi: u32, lo: u32) -> u32 {
    (insn >> lo) & ((1u32 << (hi - lo + 1)) - 1)
}

/// `insn<n>`.
#[inline(always)]
pub(crate) const fn bit(insn: u32, n: u32) -> bool {
    (insn >> n) & 1 != 0
}

/// SignExtend(v<width-1:0>) to 64 bits, `width` in 1..=64.
#[inline(always)]
pub(crate) const fn sext(v: u64, width: u32) -> u64 {
    let sh = 64u32.wrapping_sub(width) & 63;
    (((v << sh) as i64) >> sh) as u64
}

/// Ones(n) for n in 0..=64.
#[inline(always)]
pub(crate) const fn ones(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Mask of the operation's datasize (32 or 64 bits).
#[inline(always)]
pub(crate) const fn dmask(sf: bool) -> u64 {
    if sf {
        u64::MAX
    } else {
        0xFFFF_FFFF
    }
}

/// Datasize in bits.
#[inline(always)]
pub(crate) const fn dsize(sf: bool) -> u32 {
    if sf {
        64
    } else {
        32
    }
}

/// ROR(v, sh) within `size` bits (size 2..=64, v already truncated to size bits).
#[inline(always)]
pub(crate) const fn ror(v: u64, sh: u32, size: u32) -> u64 {
    let sh = sh % size;
    if sh == 0 {
        v
    } else {
        ((v >> sh) | (v << (size - sh))) & ones(size)
    }
}

/// Replicate(elem<esize-1:0>) to 64 bits.
#[inline(always)]
const fn replicate(mut v: u64, mut esize: u32) -> u64 {
    while esize < 64 {
        v |= v << esize;
        esize *= 2;
    }
    v
}

/// J1.1 `DecodeBitMasks(immN, imms, immr, immediate, M)`: returns `(wmask, tmask)` truncated to
/// `datasize`, or `None` where the pseudocode says UNDEFINED (reserved value).
pub(crate) const fn decode_bit_masks(
    immn: u32,
    imms: u32,
    immr: u32,
    immediate: bool,
    datasize: u32,
) -> Option<(u64, u64)> {
    // len = HighestSetBit(immN:NOT(imms)).
    let combined = ((immn & 1) << 6) | (!imms & 0x3F);
    if combined == 0 {
        return None;
    }
    let len = 31 - combined.leading_zeros();
    if len < 1 {
        return None;
    }
    let esize = 1u32 << len;
    if esize > datasize {
        return None;
    }
    let levels = esize - 1;
    if immediate && (imms & levels) == levels {
        return None;
    }
    let s = imms & levels;
    let r = immr & levels;
    let d = s.wrapping_sub(r) & levels;
    let welem = ones(s + 1);
    let telem = ones(d + 1);
    let wmask = replicate(ror(welem, r, esize), esize) & ones(datasize);
    let tmask = replicate(telem, esize) & ones(datasize);
    Some((wmask, tmask))
}

/// J1 `AddWithCarry(x, y, carry_in)` at datasize; returns (result truncated, NZCV).
#[inline(always)]
pub(crate) const fn add_with_carry(x: u64, y: u64, carry: bool, sf: bool) -> (u64, u8) {
    if sf {
        let (r1, c1) = x.overflowing_add(y);
        let (r, c2) = r1.overflowing_add(carry as u64);
        let v = ((x ^ r) & (y ^ r)) >> 63 != 0;
        let n = r >> 63 != 0;
        (r, flags(n, r == 0, c1 || c2, v))
    } else {
        let (x, y) = (x as u32, y as u32);
        let (r1, c1) = x.overflowing_add(y);
        let (r, c2) = r1.overflowing_add(carry as u32);
        let v = ((x ^ r) & (y ^ r)) >> 31 != 0;
        let n = r >> 31 != 0;
        (r as u64, flags(n, r == 0, c1 || c2, v))
    }
}

/// Packs N, Z, C, V into bits 3..0.
#[inline(always)]
pub(crate) const fn flags(n: bool, z: bool, c: bool, v: bool) -> u8 {
    ((n as u8) << 3) | ((z as u8) << 2) | ((c as u8) << 1) | (v as u8)
}

/// NZ from a logical result (C = V = 0), as ANDS/BICS set them.
#[inline(always)]
pub(crate) const fn logic_flags(r: u64, sf: bool) -> u8 {
    let n = if sf { r >> 63 } else { (r >> 31) & 1 };
    flags(n != 0, r == 0, false, false)
}

/// J1 `ConditionHolds(cond)` against PSTATE.NZCV (bits 3..0).
#[inline(always)]
pub(crate) const fn condition_holds(cond: u32, nzcv: u8) -> bool {
    let n = nzcv & 8 != 0;
    let z = nzcv & 4 != 0;
    let c = nzcv & 2 != 0;
    let v = nzcv & 1 != 0;
    let result = match (cond >> 1) & 7 {
        0 => z,
        1 => c,
        2 => n,
        3 => v,
        4 => c && !z,
        5 => n == v,
        6 => n == v && !z,
        _ => true,
    };
    if cond & 1 == 1 && cond != 0b1111 {
        !result
    } else {
        result
    }
}

/// J1 `ShiftReg(reg, shift_type, amount)` at datasize (`v` already truncated; amount < size).
/// Shift types: 0 LSL, 1 LSR, 2 ASR, 3 ROR.
#[inline(always)]
pub(crate) const fn shift_reg(v: u64, ty: u32, amount: u32, sf: bool) -> u64 {
    let size = dsize(sf);
    let amount = amount % size;
    let r = match ty & 3 {
        0 => v << amount,
        1 => v >> amount,
        2 => {
            if sf {
                ((v as i64) >> amount) as u64
            } else {
                (((v as u32) as i32) >> amount) as u32 as u64
            }
        }
        _ => ror(v, amount, size),
    };
    r & dmask(sf)
}

/// J1 `ExtendReg(reg, extend_type, shift)` over a 64-bit value: option 0..=7 =
/// UXTB, UXTH, UXTW, UXTX, SXTB, SXTH, SXTW, SXTX; `shift` 0..=4.
#[inline(always)]
pub(crate) const fn extend_reg(v: u64, option: u32, shift: u32) -> u64 {
    let width = 8u32 << (option & 3);
    let e = if option & 4 != 0 {
        sext(v, width)
    } else {
        v & ones(width)
    };
    e << (shift & 7)
}
