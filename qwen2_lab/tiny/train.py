"""Train a tiny Qwen2 (or Qwen2-MoE) on the curriculum, with HF's own model and loss.

The recipe, chosen so a 1-2M-parameter model learns within minutes on one CPU core:

- loss on the answer only: the prompt's labels are -100, so every gradient comes from the tokens the model must
  produce (the answer and its closing <|im_end|>), not from re-predicting the question;
- short sequences, batched by similar length (a pool of batches is sorted by length, then shuffled), padded on the
  right: with causal attention no real token ever sees a pad, and pads carry label -100;
- AdamW with a linear warmup and a cosine decay to a tenth of the peak rate; gradient clipping at 1;
- the weights kept are an exponential moving average over the second half of training (`ema`, `ema_from`): a batch
  of similar lengths leans towards some tasks (its commonest task is about half of it, against 30% of the mix), so
  each step pulls the raw weights towards whatever came last; the average smooths that step-to-step noise out;
- for the MoE, HF adds `router_aux_loss_coef` x the load-balancing loss when `output_router_logits=True` (no
  attention_mask is passed, so pad tokens count in that balance too: a small bias, paid for a simpler batch).

Everything random comes from the seed: the weights (torch.manual_seed) and the problems (random.Random), so the same
seed, steps and thread count give the same losses.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch

from .curriculum import HELD_OUT_MAX, MIX, Problem, held_out, training_stream


@dataclass
class Recipe:
    """Everything that decides a training run (saved beside the checkpoint, in training.json)."""

    seed: int = 0
    steps: int = 10000
    batch_size: int = 16  # small batches, many steps: more updates per second of CPU is what a tiny model needs
    lr: float = 3e-3
    warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.98)
    clip: float = 1.0
    sort_pool: int = 16  # batches drawn at once and sorted by length, to pad little
    ema: float | None = 0.999  # the weights kept: ema * average + (1 - ema) * weights after each step; None: the last
    ema_from: float = 0.5  # the average starts at this fraction of the steps
    mix: dict | None = None  # task -> share of the problems; None: curriculum.MIX
    threads: int = 1  # one thread: on a shared CPU, two threads stall whenever another process takes a core


def encode(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat (prompt + answer + <|im_end|>) and labels that are -100 except on the answer.

    The prompt is exactly what `Lab.generate` feeds the model: the chat template with the assistant header.
    """
    prompt = tokenizer.apply_chat_template(problem.messages(), add_generation_prompt=True, tokenize=False)
    p_ids = tokenizer.encode(prompt, add_special_tokens=False)
    a_ids = tokenizer.encode(problem.answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return p_ids + a_ids, [-100] * len(p_ids) + a_ids


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad on the right to the longest: input_ids, labels and attention_mask, (B, S) each; pads get label -100 and
    mask 0 (so the MoE's load-balancing loss counts real tokens only)."""
    S = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), S), pad_id, dtype=torch.long)  # (B, S)
    labels = torch.full((len(pairs), S), -100, dtype=torch.long)  # (B, S)
    mask = torch.zeros((len(pairs), S), dtype=torch.long)  # (B, S)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask


def batches(tokenizer, recipe: Recipe, exclude: set):
    """Endless (input_ids, labels, attention_mask) batches from the seeded training stream, grouped by similar length."""
    stream = training_stream(recipe.seed, exclude, recipe.mix or MIX)
    rng = random.Random(recipe.seed + 1)
    pad_id = tokenizer.pad_token_id
    while True:
        pool = sorted((encode(tokenizer, next(stream)) for _ in range(recipe.batch_size * recipe.sort_pool)),
                      key=lambda pair: len(pair[0]))  # fmt: skip
        chunks = [pool[i : i + recipe.batch_size] for i in range(0, len(pool), recipe.batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield collate(chunk, pad_id)


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warmup over `warmup` steps, then cosine from `lr` down to `min_lr_ratio * lr` at the last step."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def make_optimizer(model, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; no weight decay on the 1-D parameters (QKV biases, RMSNorm weights), as is usual."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas)


def train(model, tokenizer, recipe: Recipe, *, minutes: float | None = None, progress: bool = True,
          log_every: int = 10) -> dict:  # fmt: skip
    """Train `model` in place (keeping, with `recipe.ema`, the moving average of its weights); return the history:
    the recipe, the loss curve and the time taken.

    minutes: a wall-clock cap; if reached, training stops early and the history says so (`stopped_early`).
    progress: print the loss at most PROGRESS_LINES times, one plain line each (no bar, nothing timed).
    History: {"step", "loss", "lm_loss", "aux_loss", "lr"} lists, one entry every `log_every` steps (the mean over
    those steps), and "recipe", "seconds" (wall), "cpu_seconds" (this process's CPU time), "steps_done",
    "stopped_early", "threads", "load" (the machine's load average before and after). Runs on `recipe.threads` CPU threads and restores the caller's count afterwards.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        history, average = _train(model, tokenizer, recipe, minutes, progress, log_every)
    finally:
        torch.set_num_threads(threads)
    keep_average(model, average, recipe.ema)
    return history


@torch.no_grad()
def update_average(average: dict | None, model, decay: float) -> dict:
    """One step of the moving average of the weights: sums = decay * sums + (1 - decay) * weights, over `n` steps.
    Started from zero, so `keep_average` divides the sums by 1 - decay**n (as Adam corrects its moments): the mean of
    the weights after each step, those of k steps ago weighing decay**k, whether the run is 100 steps long or 16,000."""
    if average is None:
        average = {"sums": [torch.zeros_like(p) for p in model.parameters()], "n": 0}
    for s, p in zip(average["sums"], model.parameters()):
        s.lerp_(p, 1 - decay)
    average["n"] += 1
    return average


@torch.no_grad()
def keep_average(model, average: dict | None, decay: float | None) -> None:
    """Put the averaged weights into `model` (nothing to do without an average)."""
    if average is None:
        return
    for p, s in zip(model.parameters(), average["sums"]):
        p.copy_(s / (1 - decay ** average["n"]))


PROGRESS_LINES = 10


def machine_load() -> float | None:
    """The 1-minute load average (runnable processes; 2 means both cores of a 2-core CPU busy), where the OS has one."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _train(model, tokenizer, recipe: Recipe, minutes, progress, log_every) -> tuple[dict, dict | None]:
    """The training loop: the history, and the moving average of the weights (None without `recipe.ema`)."""
    torch.manual_seed(recipe.seed)
    is_moe = model.config.model_type == "qwen2_moe"
    aux_coef = model.config.router_aux_loss_coef if is_moe else 0.0
    exclude = {p.key for p in held_out(HELD_OUT_MAX)}  # never train on a problem any evaluation may ask
    data = batches(tokenizer, recipe, exclude)
    opt = make_optimizer(model, recipe)
    model.train()
    hist = {k: [] for k in ("step", "loss", "lm_loss", "aux_loss", "lr")}
    window = {"loss": [], "aux_loss": []}
    load_before = machine_load()
    start, cpu_start, stopped, step = time.time(), time.process_time(), False, 0
    report_every = max(1, recipe.steps // PROGRESS_LINES)
    average, average_from = None, int(recipe.ema_from * recipe.steps)
    while step < recipe.steps and not stopped:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        ids, labels, mask = next(data)  # (B, S) each
        out = model(
            input_ids=ids, attention_mask=mask, labels=labels, **({"output_router_logits": True} if is_moe else {})
        )
        out.loss.backward()  # for the MoE, out.loss already includes router_aux_loss_coef * aux_loss (pads left out)
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if recipe.ema is not None and step >= average_from:
            average = update_average(average, model, recipe.ema)
        window["loss"].append(out.loss.item())
        window["aux_loss"].append(out.aux_loss.item() if is_moe else 0.0)
        step += 1
        stopped = minutes is not None and time.time() - start > 60 * minutes
        if step % log_every == 0 or step == recipe.steps or stopped:
            loss, aux = (sum(v) / len(v) for v in window.values())
            hist["step"].append(step)
            hist["lr"].append(lr_at(step - 1, recipe))
            hist["loss"].append(loss)
            hist["aux_loss"].append(aux)
            hist["lm_loss"].append(loss - aux_coef * aux)
            window = {"loss": [], "aux_loss": []}
        if progress and (step % report_every == 0 or stopped):
            print(
                f"step {step}/{recipe.steps}  loss {hist['loss'][-1] if hist['loss'] else out.loss.item():.4f}  {time.time() - start:.0f} s",
                flush=True,
            )
    model.eval()
    return dict(hist, recipe=asdict(recipe), load=[load_before, machine_load()], seconds=round(time.time() - start, 1), cpu_seconds=round(time.process_time() - cpu_start, 1),
                steps_done=step, stopped_early=stopped, threads=torch.get_num_threads()), average  # fmt: skip
