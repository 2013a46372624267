"""Markdown rendering of the speed benchmark's result (``speed.md``)."""

from __future__ import annotations

__all__ = ["speed_markdown"]


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2g}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def speed_markdown(result: dict) -> str:
    """Tables of ``result`` (the ``speed.json`` content): iterations, phases, targets, samplers."""
    cfg, machine = result["config"], result["machine"]
    entries = result["entries"]
    title = "Speed benchmark" if entries else "Sampler benchmark"
    out = [f"# {title} (preset `{result['preset']}`)", ""]
    out.append(f"Run {machine['date']} on {machine['cpu']} ({machine['cpu_cores_usable']} usable cores, "
               f"{machine['torch_threads']} torch threads" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
               + f"), torch {machine['torch']}, device `{machine['device']}`, seed {result['seed']}"
               + (f", load average at start {machine['load_average'][0]:.1f}" if machine.get("load_average") else "") + ".")
    if entries:
        out.append(f"Model: {cfg['model']} ({cfg['model_parameters']:,} parameters), masked, L = {cfg['length']}; "
                   f"B = {cfg['num_generations']}, G = {cfg['num_groups']}, K = {cfg['num_iterations']}, "
                   f"M = {cfg['num_snis_samples']}, T = {cfg['sampling_steps']} ({cfg['sampler']} sampler), beta = {cfg['beta']}, "
                   f"KL over the last {cfg['kl_truncation_steps']} steps; reward `{cfg['reward']}`.")
    out.append("")
    if entries:
        out += ["## One iteration", "",
                "Seconds and network passes (sequence-forwards) of one whole iteration; `× rollout` = this / "
                "rollout-only; `× own rollout` = this / the rollout phase of the same run (insensitive to load "
                "changes between runs); `ref ÷` = reference-style / this. Rows marked *extrapolated* are not fully measured "
                "(see below).", ""]
        rows = []
        for name, e in entries.items():
            rows.append([f"`{name}`" + ("" if e.get("measured", True) else " *extrapolated*"), e.get("label", ""),
                         e["seconds_per_iteration"], e.get("time_vs_rollout_only"), e.get("time_vs_own_rollout"),
                         e.get("reference_time_ratio"),
                         e["network_passes"], e.get("passes_vs_rollout_only"), e.get("reference_passes_ratio"),
                         e.get("estimator_passes"), e.get("reference_estimator_passes_ratio"), e.get("peak_memory_mb")])
        out += _table(["entry", "settings", "s / iter", "× rollout", "× own rollout", "ref ÷ (time)", "passes", "× rollout (passes)",
                       "ref ÷ (passes)", "estimator passes", "ref ÷ (estimator passes)", "peak MiB"], rows)
        reps = {n: e["repeats_seconds"] for n, e in entries.items() if e.get("repeats_seconds")}
        if reps:
            out += ["", "Entries run several times (alternated) report their fastest run: "
                    + "; ".join(f"`{n}` " + ", ".join(_fmt(v) for v in r) + " s" for n, r in reps.items()) + "."]
        out += ["", "### Phases (seconds / passes)", ""]
        rows = []
        for name, e in entries.items():
            ph = e["phases"]
            row = [f"`{name}`"]
            for p in ("rollout", "reward", "prepare", "update", "kl"):
                d = ph.get(p)
                row.append("–" if d is None else f"{_fmt(d['seconds'])} / {_fmt(d['passes'])}")
            rows.append(row)
        out += _table(["entry", "rollout", "reward", "prepare", "update (+backward, step)", "kl (forward)"], rows)
        out += ["", "`prepare`: reference kernels + the old policy's KL at the KL steps, then the estimator's draws and "
                "old log-probabilities (no gradient). `update`: the estimator's forward with gradient, the loss, the "
                "backward pass of loss + KL and the optimizer step, over K epochs. `kl`: the policy's forward at the KL "
                "steps in the epochs.", ""]
    frac = result.get("reference_fraction")
    if frac:
        out += ["### How the reference-style row was obtained", "",
                f"Measured fraction: the real `sepo-snis` estimator on {frac['samples']} sample(s) of the same batch with "
                f"{frac['neighbours']} Hamming neighbours and M = {frac['snis_samples']} "
                f"({frac['passes_per_sample_per_evaluation']} passes per sample per evaluation): prepare (SNIS weights + old "
                f"log-probabilities) {frac['no_grad_passes']:,} passes in {_fmt(frac['no_grad_seconds'])} s, one epoch "
                f"(forward with gradient + loss + backward) {frac['grad_passes']:,} passes in {_fmt(frac['grad_seconds'])} s.",
                f"Full estimator work (exact counts): {result['reference_counts']['candidates_per_sample']} candidates per "
                f"sample (x and all L(|V|-1) neighbours), {result['reference_counts']['no_grad_passes']:,} passes without "
                f"and {result['reference_counts']['grad_passes']:,} with gradient; its time = passes × the measured seconds "
                "per pass of each kind. Rollout, reward, KL and optimizer are the measured `rollout_kl` row "
                "(same batch, same KL settings). Peak memory is extrapolated for `sepo-snis` forwarding every "
                "candidate of the batch at once.", ""]
    targets = result.get("targets")
    if targets:
        out += ["## Targets", ""]
        rows = [[t["what"], t["value"], t["target"], t["met"]] for t in targets.values()]
        out += _table(["target", "measured", "required", "met"], rows)
        out.append("")
    samplers = result.get("samplers")
    if samplers:
        out += ["## Sampler throughput", "",
                f"Model {samplers['model']} ({samplers['model_parameters']:,} parameters), {samplers['num_samples']} "
                f"sequences of length {samplers['length']} per draw, one draw per row.", ""]
        rows = []
        for r in samplers["cases"]:
            if "skipped" in r:
                rows.append([r["sampler"], r["steps"], r["corrector_steps"], "skipped", "", "", "", ""])
                continue
            rows.append([r["sampler"], r["steps"], r["corrector_steps"], r["sequences_per_second"], r["seconds"],
                         r["network_passes"], r["passes_per_sequence"], r["peak_memory_mb"]])
        out += _table(["sampler", "T", "corrector", "seq / s", "seconds", "passes", "passes / seq", "peak MiB"], rows)
        if samplers.get("gains"):
            out += ["", "Cached over plain ancestral:", ""]
            out += _table(["T", "corrector", "throughput gain", "fewer passes"],
                          [[g["steps"], g["corrector_steps"], g["throughput_gain"], g["pass_reduction"]] for g in samplers["gains"]])
        if samplers.get("variants"):
            out += ["", "Options (one change against the matching row above):", ""]
            rows = []
            for v in samplers["variants"]:
                if "skipped" in v:
                    rows.append([v["variant"], v.get("sampler"), v.get("steps"), "skipped: " + v["skipped"], "", ""])
                else:
                    rows.append([v["variant"], v["sampler"], v["steps"], v["sequences_per_second"], v["peak_memory_mb"],
                                 v.get("compile_seconds")])
            out += _table(["variant", "sampler", "T", "seq / s", "peak MiB", "compile s"], rows)
        out.append("")
    for note in result.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"
