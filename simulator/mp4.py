"""A tiny, genuinely decodable H.264-in-MP4 writer (no encoder, no ffmpeg).

The simulator must hand out video files that type sniffers and metadata readers accept
(`filetype`, MediaInfo, ffprobe) and that a decoder can actually play, without shipping
binaries or depending on ffmpeg being installed. H.264 has a macroblock type, I_PCM, that
carries raw samples, so a valid keyframe can be written with nothing but a bit writer; the
following frames are P frames made only of skipped macroblocks (a few bytes each). The
container is a plain "fast start" ISO-BMFF file: ftyp, moov (one avc1 track), mdat.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

_TIMESCALE = 12_800
_MOVIE_TIMESCALE = 1_000
_LEVEL_IDC = 30
_PROFILE_IDC = 66  # Baseline
_CONSTRAINT_FLAGS = 0xC0
_MAX_FRAME_NUM = 16  # log2_max_frame_num_minus4 = 0
_IDENTITY_MATRIX = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


class _BitWriter:
    """MSB-first bit writer with the Exp-Golomb codes H.264 headers are made of."""

    __slots__ = ("_acc", "_nbits", "_out")

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._nbits = 0

    def u(self, nbits: int, value: int) -> None:
        for shift in range(nbits - 1, -1, -1):
            self._acc = (self._acc << 1) | ((value >> shift) & 1)
            self._nbits += 1
            if self._nbits == 8:
                self._out.append(self._acc)
                self._acc = 0
                self._nbits = 0

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.u(length - 1, 0)
        self.u(length, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        while self._nbits:
            self.u(1, 0)

    def raw(self, data: bytes) -> None:
        """Append whole bytes; the writer must be byte aligned (PCM samples are)."""
        if self._nbits:
            raise ValueError("raw bytes need byte alignment")
        self._out += data

    def trailing(self) -> bytes:
        """rbsp_trailing_bits(): a stop bit, then zero bits up to the byte boundary."""
        self.u(1, 1)
        self.align_zero()
        return bytes(self._out)


def _nal(header: int, rbsp: bytes) -> bytes:
    """Wrap an RBSP into a NAL unit, inserting emulation-prevention bytes."""
    out = bytearray([header])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _sps(mb_width: int, mb_height: int, crop: tuple[int, int]) -> bytes:
    """Sequence parameter set; `crop` = (right, bottom) in 2-pixel 4:2:0 crop units."""
    bits = _BitWriter()
    bits.u(8, _PROFILE_IDC)
    bits.u(8, _CONSTRAINT_FLAGS)
    bits.u(8, _LEVEL_IDC)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(0)  # log2_max_frame_num_minus4
    bits.ue(2)  # pic_order_cnt_type: derived from frame_num, no B frames
    bits.ue(1)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mb_width - 1)
    bits.ue(mb_height - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    bits.u(1, 1 if any(crop) else 0)  # frame_cropping_flag
    if any(crop):
        for offset in (0, crop[0], 0, crop[1]):  # left, right, top, bottom
            bits.ue(offset)
    bits.u(1, 0)  # vui_parameters_present_flag
    return _nal(0x67, bits.trailing())


def _pps() -> bytes:
    bits = _BitWriter()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(1, 0)  # weighted_pred_flag
    bits.u(2, 0)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 1)  # deblocking_filter_control_present_flag
    bits.u(1, 0)  # constrained_intra_pred_flag
    bits.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(0x68, bits.trailing())


def _idr_slice(mb_count: int, luma: int, chroma: tuple[int, int]) -> bytes:
    """An IDR picture whose macroblocks are all I_PCM with flat sample values."""
    bits = _BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I (all slices)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(4, 0)  # frame_num
    bits.ue(0)  # idr_pic_id
    bits.u(1, 0)  # no_output_of_prior_pics_flag
    bits.u(1, 0)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc
    samples = bytes([luma]) * 256 + bytes([chroma[0]]) * 64 + bytes([chroma[1]]) * 64
    for _ in range(mb_count):
        bits.ue(25)  # mb_type I_PCM
        bits.align_zero()  # pcm_alignment_zero_bit
        bits.raw(samples)
    return _nal(0x65, bits.trailing())


def _skip_slice(mb_count: int, frame_num: int) -> bytes:
    """A reference P picture that repeats the previous one (every macroblock skipped)."""
    bits = _BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(5)  # slice_type: P (all slices)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(4, frame_num % _MAX_FRAME_NUM)
    bits.u(1, 0)  # num_ref_idx_active_override_flag
    bits.u(1, 0)  # ref_pic_list_modification_flag_l0
    bits.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc
    bits.ue(mb_count)  # mb_skip_run
    return _nal(0x41, bits.trailing())


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _avc1_entry(width: int, height: int, sps: bytes, pps: bytes) -> bytes:
    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),
        struct.pack(">H", len(sps)),
        sps,
        b"\x01",
        struct.pack(">H", len(pps)),
        pps,
    )
    compressor = b"\x0bsimulator" + b"\x00" * 22
    return _box(
        b"avc1",
        b"\x00" * 6 + struct.pack(">H", 1),  # reserved, data_reference_index
        b"\x00" * 16,  # pre_defined / reserved
        struct.pack(">HHII", width, height, 0x00480000, 0x00480000),
        struct.pack(">IH", 0, 1),  # reserved, frame_count
        compressor,
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )


def _stbl(entry: bytes, sizes: list[int], delta: int, chunk_offset: int) -> bytes:
    return _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        _full_box(b"stts", 0, 0, struct.pack(">III", 1, len(sizes), delta)),
        _full_box(b"stss", 0, 0, struct.pack(">II", 1, 1)),
        _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(sizes), 1)),
        _full_box(b"stsz", 0, 0, struct.pack(f">II{len(sizes)}I", 0, len(sizes), *sizes)),
        _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
    )


def _moov(
    *, width: int, height: int, fps: int, sizes: list[int], nals: tuple[bytes, bytes], offset: int
) -> bytes:
    frames = len(sizes)
    delta = _TIMESCALE // fps
    media_duration = frames * delta
    movie_duration = media_duration * _MOVIE_TIMESCALE // _TIMESCALE
    mvhd = _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, _MOVIE_TIMESCALE, movie_duration),
        struct.pack(">IH", 0x00010000, 0x0100) + b"\x00" * 10,
        _IDENTITY_MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),
    )
    tkhd = _full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, 1, 0, movie_duration),
        b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0, 0),
        _IDENTITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full_box(
        b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, _TIMESCALE, media_duration, 0x55C4, 0)
    )
    hdlr = _full_box(b"hdlr", 0, 0, b"\x00" * 4, b"vide", b"\x00" * 12, b"VideoHandler\x00")
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    vmhd = _full_box(b"vmhd", 0, 1, b"\x00" * 8)
    entry = _avc1_entry(width, height, *nals)
    minf = _box(b"minf", vmhd, dinf, _stbl(entry, sizes, delta, offset))
    return _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))


def _length_prefixed(nals: Iterable[bytes]) -> list[bytes]:
    return [struct.pack(">I", len(nal)) + nal for nal in nals]


def render_mp4(
    *, width: int, height: int, duration_s: float, fps: int = 10, shade: int = 128
) -> bytes:
    """Return a valid H.264 (Baseline) MP4 of a flat-coloured picture.

    Odd `width`/`height` are rounded up to even (4:2:0 cropping works in 2-pixel units);
    `shade` (0-255) picks the colour so different jobs can get different bytes.
    """
    width, height = max(2, width + width % 2), max(2, height + height % 2)
    mb_w, mb_h = -(-width // 16), -(-height // 16)
    frames = max(1, round(duration_s * fps))
    mb_count = mb_w * mb_h
    luma = 16 + shade * 219 // 255
    chroma = (16 + (shade * 7) % 224, 240 - (shade * 3) % 224)
    crop = ((mb_w * 16 - width) // 2, (mb_h * 16 - height) // 2)
    sps, pps = _sps(mb_w, mb_h, crop), _pps()
    samples = _length_prefixed(
        [_idr_slice(mb_count, luma, chroma)] + [_skip_slice(mb_count, n) for n in range(1, frames)]
    )
    sizes = [len(sample) for sample in samples]
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    probe = _moov(width=width, height=height, fps=fps, sizes=sizes, nals=(sps, pps), offset=0)
    offset = len(ftyp) + len(probe) + 8
    moov = _moov(width=width, height=height, fps=fps, sizes=sizes, nals=(sps, pps), offset=offset)
    mdat = _box(b"mdat", *samples)
    return ftyp + moov + mdat


def free_box_header(payload_bytes: int) -> bytes:
    """Header of a `free` box holding `payload_bytes` of padding (64-bit size when needed).

    Appending it and the padding to a file from `render_mp4` keeps the file a valid MP4,
    which is how the simulator makes arbitrarily large video results.
    """
    if payload_bytes + 8 <= 0xFFFFFFFF:
        return struct.pack(">I", payload_bytes + 8) + b"free"
    return struct.pack(">I", 1) + b"free" + struct.pack(">Q", payload_bytes + 16)
