"""Rotary positions: the vision encoder's 2D rope and the language model's 3D M-RoPE.

Pure functions of token ids and grids; nothing is cached in a module between calls.

M-RoPE (Qwen2-VL paper, sec. 2.1; transformers' ``Qwen2_5_VLModel.get_rope_index``): every token
has three position ids (temporal, height, width). Text tokens use the same id on all three rows,
one more than the previous token's largest id. A vision block of ``t x h x w`` merged patches
starting at id ``s`` gets ``(s + t_idx * interval, s + h_idx, s + w_idx)``; for videos
``interval = tokens_per_second * second_per_grid_t`` (seconds per temporal patch), for images 1.
The text after a vision block starts at (largest id in the block) + 1, as in the original
Qwen2.5-VL code that MiMo-VL was trained with. transformers 5.x instead restarts it at
``s + max(h, w)``, which differs only for videos whose temporal extent exceeds their spatial one
(see huggingface/transformers#45381); for every image, and such short videos, the two agree.
"""

from __future__ import annotations

import torch


# ---------------------------------------------------------------- language model (3D M-RoPE)
def text_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def mrope_cos_sin(
    position_ids: torch.Tensor, inv_freq: torch.Tensor, mrope_section: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids (3, B, S) -> cos, sin (B, S, head_dim).

    The head_dim/2 frequencies are split into ``mrope_section`` chunks (e.g. 16/24/24): chunk i
    rotates with the temporal, height or width position (i % 3).
    """
    freqs = position_ids[..., None].float() * inv_freq.to(position_ids.device)  # (3, B, S, head_dim/2)
    chunks = freqs.split(list(mrope_section), dim=-1)
    freqs = torch.cat([chunk[i % 3] for i, chunk in enumerate(chunks)], dim=-1)  # (B, S, head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


def _vision_block_positions(start: int, grid_thw: list[int], merge: int, interval: float) -> torch.Tensor:
    t, h, w = grid_thw[0], grid_thw[1] // merge, grid_thw[2] // merge
    t_idx = (torch.arange(t, dtype=torch.float64) * interval).long()  # quantise after scaling
    tt, hh, ww = torch.meshgrid(t_idx, torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, hh, ww]).reshape(3, -1) + start


def rope_index_1d(
    input_ids: torch.Tensor,
    grids: list[tuple[int, list[int], float]],
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int,
) -> torch.Tensor:
    """3D positions (3, S) of one unpadded sequence. ``grids`` lists, in order of appearance,
    (token_id, grid_thw, temporal interval) for each image/video in it."""
    ids = input_ids.tolist()
    pieces, pos, i, g = [], 0, 0, 0
    while i < len(ids):
        if ids[i] in (image_token_id, video_token_id):
            if g >= len(grids):
                raise ValueError("more image/video placeholder tokens than image_grid_thw/video_grid_thw entries")
            token_id, grid, interval = grids[g]
            n = grid[0] * grid[1] * grid[2] // spatial_merge_size**2
            if ids[i] != token_id or ids[i:i + n] != [token_id] * n:
                kind = "image" if token_id == image_token_id else "video"
                raise ValueError(f"{kind} {g} of grid {grid} needs {n} consecutive placeholder tokens; the text has "
                                 f"a different count: the placeholders do not match the grids")
            block = _vision_block_positions(pos, grid, spatial_merge_size, interval)
            pieces.append(block)
            pos, i, g = int(block.max()) + 1, i + n, g + 1
        else:
            j = i
            while j < len(ids) and ids[j] not in (image_token_id, video_token_id):
                j += 1
            pieces.append(torch.arange(pos, pos + j - i).expand(3, -1))
            pos, i = pos + j - i, j
    if g != len(grids):
        raise ValueError(f"{len(grids)} images/videos given but the text has placeholders for {g}")
    return torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)


def get_rope_index(
    input_ids: torch.Tensor,
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | list[float] | None = None,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) token ids -> position_ids (3, B, S) and rope_deltas (B, 1).

    ``rope_deltas`` = next position id - number of real tokens, so that a generated token at cache
    index i (counting real tokens) gets position ``i + delta``. Padding (attention_mask == 0) gets
    position 0. With ``cu_seqlens`` (B == 1, packed samples) positions restart at 0 per sample.
    Images and videos are consumed in order across the batch, as transformers does.
    """
    B, S = input_ids.shape
    image_grids = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    video_grids = iter(video_grid_thw.tolist() if video_grid_thw is not None else [])
    seconds = iter(torch.as_tensor(second_per_grid_ts).tolist() if second_per_grid_ts is not None else [])
    positions = torch.zeros(3, B, S, dtype=torch.long)
    deltas = torch.zeros(B, 1, dtype=torch.long)
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError("packed input (cu_seqlens) must have batch size 1")
        bounds = cu_seqlens.tolist()
        segments = [(0, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    else:
        segments = [(b, slice(None)) for b in range(B)]
    for row, cols in segments:
        ids = input_ids[row, cols]
        keep = attention_mask[row, cols].bool() if attention_mask is not None else torch.ones_like(ids, dtype=torch.bool)
        real = ids[keep].cpu()
        grids = _take_grids(real, image_grids, video_grids, seconds, image_token_id, video_token_id,
                            spatial_merge_size, tokens_per_second)
        pos = rope_index_1d(real, grids, image_token_id=image_token_id, video_token_id=video_token_id,
                            spatial_merge_size=spatial_merge_size)
        target = positions[:, row, cols]
        target[:, keep.cpu()] = pos
        positions[:, row, cols] = target
        deltas[row, 0] = (int(pos.max()) + 1 if pos.numel() else 0) - len(real)
    return positions.to(input_ids.device), deltas.to(input_ids.device)


def _take_grids(ids, image_grids, video_grids, seconds, image_token_id, video_token_id, merge, tokens_per_second):
    """Pop from the batch-wide grid iterators the grids this sample's placeholders consume."""
    grids, i, ids = [], 0, ids.tolist()
    while i < len(ids):
        if ids[i] == image_token_id:
            grid = next(image_grids, None)
            if grid is None:
                raise ValueError("the text has more image placeholders than image_grid_thw has entries")
            grids.append((image_token_id, grid, 1.0))
        elif ids[i] == video_token_id:
            grid = next(video_grids, None)
            if grid is None:
                raise ValueError("the text has more video placeholders than video_grid_thw has entries")
            sec = next(seconds, 1.0)
            grids.append((video_token_id, grid, tokens_per_second * sec))
        else:
            i += 1
            continue
        n = max(1, grid[0] * grid[1] * grid[2] // merge**2)
        if ids[i:i + n] != [ids[i]] * n:  # a shorter run: the grids belong to other placeholders
            kind, run = ("image" if ids[i] == image_token_id else "video"), 0
            while i + run < len(ids) and ids[i + run] == ids[i]:
                run += 1
            index = sum(g[0] == ids[i] for g in grids) - 1
            raise ValueError(f"{kind} {index} of grid {grid} needs {n} consecutive placeholder tokens; the text has "
                             f"{run}: the placeholders do not match the grids")
        i += n
    return grids


# ---------------------------------------------------------------- vision encoder (2D rope, windows)
def vision_rotary_positions(grid_thw: torch.Tensor, spatial_merge_size: int) -> torch.Tensor:
    """(N, 2) (row, column) of every patch, in the order the image processor emits them:
    merge-block-major (each 2x2 block of patches is contiguous), frames one after another."""
    out = []
    m = spatial_merge_size
    for t, h, w in grid_thw.tolist():
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        hh = hh.reshape(h // m, m, w // m, m).transpose(1, 2).flatten()
        ww = ww.reshape(h // m, m, w // m, m).transpose(1, 2).flatten()
        out.append(torch.stack([hh, ww], dim=-1).repeat(t, 1))
    return torch.cat(out)


def vision_frame_cu_seqlens(grid_thw: torch.Tensor) -> torch.Tensor:
    """Full-attention segments: one per frame (temporal patch) of each image/video."""
    lengths = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    return torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


def vision_window_index(
    grid_thw: torch.Tensor, spatial_merge_size: int, window_size: int, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-ViT's window attention reorders merged patches window by window.

    Returns window_index (N/merge^2,): new order of the merge units, and cu_window_seqlens: the
    window boundaries in patches (after reordering). Windows are window_size pixels wide
    (window_size // merge // patch merged tokens); edge windows are smaller.
    """
    win = window_size // spatial_merge_size // patch_size
    unit = spatial_merge_size**2
    order, cu, offset = [], [0], 0
    for t, h, w in grid_thw.tolist():
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        idx = torch.arange(t * gh * gw).reshape(t, gh, gw)
        nh, nw = -(-gh // win), -(-gw // win)
        padded = torch.full((t, nh * win, nw * win), -1, dtype=torch.long)
        padded[:, :gh, :gw] = idx
        # (t, nh, win, nw, win) -> (t, nh, nw, win, win): one row per window
        windows = padded.reshape(t, nh, win, nw, win).permute(0, 1, 3, 2, 4).reshape(t * nh * nw, win * win)
        for window in windows:
            members = window[window >= 0]
            if members.numel():
                order.append(members + offset)
                cu.append(cu[-1] + members.numel() * unit)
        offset += t * gh * gw
    return torch.cat(order), torch.tensor(cu, dtype=torch.int32)
