"""The numbers behind the theory's predictions about SAM, on quadratics.

    python scripts/quadratic_predictions.py > predictions.md
    python scripts/quadratic_predictions.py --verdicts   # one line per prediction

Prints markdown tables (a few seconds on a CPU): the edges of stability of GD,
USAM and SAM, closed form against measured; SAM's 2-cycle along the top
eigenvector; the rho^2 floor of stochastic SAM; USAM diverging where SAM does
not; then one verdict per prediction with its numbers. SAM iterates come from
`sam_jax.sam` chained with `optax.sgd`; the closed forms from `sam_jax.analysis`
(stability.py derives them).
tests/test_sam_theory.py checks the same predictions.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402  (after the environment is set)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import sam_jax  # noqa: E402
from sam_jax import analysis  # noqa: E402

LR, RHO = 0.1, 0.05


def table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.5g}" if isinstance(value, (float, np.floating)) else str(value)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rotated(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal(
        (len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T, q


def sam_run(hessian, x0, lr, rho, steps):
    """Iterates [steps + 1, dim] of sam_jax.sam + optax.sgd on x^T H x / 2."""
    hessian = jnp.asarray(hessian, jnp.float32)
    grad_fn = jax.grad(lambda x: 0.5 * x @ hessian @ x)
    tx = optax.chain(sam_jax.sam(rho), optax.sgd(lr))

    def step(carry, _):
        x, state = carry
        updates, state = tx.update(grad_fn(x), state, x, grad_fn=grad_fn)
        x = optax.apply_updates(x, updates)
        return (x, state), x

    x0 = jnp.asarray(x0, jnp.float32)
    _, xs = jax.lax.scan(step, (x0, tx.init(x0)), None, length=steps)
    return np.concatenate([np.asarray(x0)[None], np.asarray(xs)]).astype(np.float64)


def bisect(is_stable, low, high, iterations=60):
    """The largest value in [low, high] where is_stable holds (monotone)."""
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if is_stable(middle) else (low, middle)
    return low


def usam_is_stable(lr, rho, steps=4000):
    """1-D USAM (e = rho g; GD at rho = 0), float64: |x_T| <= |x_0|."""
    def stable(curvature):
        x = 1.0
        for _ in range(steps):
            x -= lr * curvature * (x + rho * curvature * x)
            if abs(x) > 1.0:
                return False
        return True
    return stable


def sam_one_step_edge(lr, rho, grad_norm):
    """The eigenvalue where one step of sam_jax.sam starts to grow the gradient.

    A 2-D quadratic diag(carrier, lambda): the flat carrier direction holds
    ||g||, the lambda direction a tiny probe whose growth factor is measured.
    """
    carrier = 0.1

    @jax.jit
    def factor(curvature):
        hessian = jnp.diag(jnp.array([carrier, curvature]))
        grad_fn = jax.grad(lambda x: 0.5 * x @ hessian @ x)
        tx = optax.chain(sam_jax.sam(rho), optax.sgd(lr))
        x = jnp.array([grad_norm / carrier, 1e-4 * grad_norm / curvature])
        updates, _ = tx.update(grad_fn(x), tx.init(x), x, grad_fn=grad_fn)
        return (x[1] + updates[1]) / x[1]

    return bisect(lambda c: float(factor(jnp.float32(c))) >= -1.0, 1e-3, 2 / lr)


def edges() -> str:
    rows = [["GD", "-", analysis.gd_edge(LR),
             bisect(usam_is_stable(LR, 0.0), 0.0, 3 / LR)]]
    rows.append(["USAM (e = rho g)", "-", analysis.usam_edge(LR, RHO),
                 bisect(usam_is_stable(LR, RHO), 0.0, 3 / LR)])
    for grad_norm in (0.01, 0.1, 1.0, 10.0, 100.0):
        rows.append(["SAM (e = rho g / norm g)", grad_norm,
                     analysis.sam_edge(LR, RHO, grad_norm),
                     sam_one_step_edge(LR, RHO, grad_norm)])
    worst = max(abs(row[3] / row[2] - 1) for row in rows)
    below = all(row[2] < analysis.gd_edge(LR) for row in rows[2:])
    rows = [row + [f"{abs(row[3] / row[2] - 1):.1e}"] for row in rows]
    verdict = ["edges of GD, USAM and SAM (closed forms)",
               f"measured edge against the closed form, lr {LR}, rho {RHO}, "
               f"norm g 0.01-100: largest relative difference {worst:.1e}; SAM's "
               f"below 2/lr at every norm g: {'yes' if below else 'no'}",
               "held" if worst < 1e-5 and below else "did not hold"]
    return table(["method", "norm g", "edge, closed form", "edge, measured",
                  "relative difference"], rows), verdict


def settled_edges() -> str:
    """SAM run to its 2-cycle: lambda_max against 2/lr and SAM's edge there."""
    eigenvalues = np.array([4.0, 2.5, 1.5, 1.0, 0.5])
    hessian, q = rotated(eigenvalues, seed=2)
    # Rows whose mean outer product is H: one "example" per row.
    rows_matrix = np.sqrt(5) * np.linalg.cholesky(hessian).T
    batch = {"a": rows_matrix.astype(np.float32)}

    def loss(params, batch):
        return 0.5 * jnp.mean(jnp.square(batch["a"] @ params))

    rows, ratios = [], []
    for lr in (0.05, 0.2, 0.3, 0.45):
        xs = sam_run(hessian, q @ np.ones(5), lr, RHO, steps=3000)
        report = analysis.edge_of_stability(loss, jnp.asarray(xs[-1], jnp.float32),
                                            batch, lr, rho=RHO)
        ratios.append(report["sam_ratio"])
        rows.append([lr, report["lambda_max"], report["two_over_lr"], report["ratio"],
                     report["grad_norm"], report["sam_edge"],
                     f"{report['sam_ratio']:.6f}"])
    worst = max(abs(r - 1) for r in ratios)
    verdict = ["SAM settles on its own edge, below 2/lr (Long & Bartlett 2023)",
               f"SAM run to its 2-cycle at 4 learning rates: lambda_max / SAM's edge "
               f"at the final norm g within {worst:.1e} of 1, where lambda_max / (2/lr) "
               f"is {min(r[3] for r in rows):.2g}-{max(r[3] for r in rows):.2g}",
               "held" if worst < 1e-3 else "did not hold"]
    return table(["lr", "lambda_max", "2/lr", "lambda_max/(2/lr)", "norm g at the end",
                  "SAM edge there", "lambda_max/SAM edge"], rows), verdict


def two_cycle() -> str:
    eigenvalues = np.array([4.0, 2.5, 1.5, 1.0, 0.5, 0.25])
    hessian, q = rotated(eigenvalues, seed=3)
    x0 = q @ np.ones(6)
    lr = 0.3
    rows, errors, rests, alternating = [], [], [], True
    for rho in (0.0, 0.02, 0.05, 0.1):
        xs = sam_run(hessian, x0, lr, rho, steps=800)
        along = xs[-3:] @ q[:, 0]
        rest = np.linalg.norm(xs[-1] - along[-1] * q[:, 0])
        predicted = lr * 4.0 * rho / (2 - lr * 4.0)
        if rho:
            errors.append(max(abs(abs(a) / predicted - 1) for a in along))
            rests.append(rest)
            alternating &= bool(np.all(along[1:] * along[:-1] < 0))
        rows.append(["GD" if rho == 0 else "SAM", rho,
                     " / ".join(f"{a:+.5f}" for a in along), predicted, rest])
    verdict = ["a 2-cycle along the top eigenvector (Bartlett, Long & Bousquet 2023)",
               f"rho 0.02-0.1, lr 0.3: amplitude lr lambda rho / (2 - lr lambda) "
               f"within {max(errors):.1e} (relative), sign alternating every step: "
               f"{'yes' if alternating else 'no'}; the rest of the iterate at most "
               f"{max(rests):.1e}",
               "held" if max(errors) < 1e-3 and max(rests) < 1e-4 and alternating
               else "did not hold"]
    return table(["method", "rho", "last 3 iterates along v_1", "predicted amplitude",
                  "norm of the rest"], rows), verdict


def stochastic_floor(rhos, full_batch, steps=4000, chains=4096):
    """Final iterates of batch-size-1 SAM on f = (f_1 + f_2)/2,
    f_i = c_i (x - z_i)^2 / 2, c = (1, 3), z = (1, -1), with lr 0.2/(1 + t/50)."""
    curvature, centre = jnp.array([1.0, 3.0]), jnp.array([1.0, -1.0])

    def chain(rho, key):
        def loss(x, i):
            if full_batch:
                return jnp.mean(0.5 * curvature * (x - centre) ** 2)
            return 0.5 * curvature[i] * (x - centre[i]) ** 2

        tx = optax.chain(sam_jax.sam(lambda count: rho),
                         optax.sgd(lambda t: 0.2 / (1.0 + t / 50.0)))

        def step(carry, i):
            x, state = carry
            grad_fn = jax.grad(lambda x: loss(x, i))
            updates, state = tx.update(grad_fn(x), state, x, grad_fn=grad_fn)
            return (optax.apply_updates(x, updates), state), None

        x0 = jnp.float32(0.5)
        samples = jax.random.randint(key, (steps,), 0, 2)
        return jax.lax.scan(step, (x0, tx.init(x0)), samples)[0][0]

    keys = jax.random.split(jax.random.PRNGKey(0), chains)
    run = jax.vmap(jax.vmap(chain, in_axes=(None, 0)), in_axes=(0, None))
    return np.asarray(jax.jit(run)(jnp.asarray(rhos, jnp.float32), keys), np.float64)


def floor() -> str:
    x_star = -0.5
    rhos = np.array([0.0, 0.05, 0.1, 0.2, 0.4])
    stochastic = stochastic_floor(rhos, full_batch=False).mean(axis=1) - x_star
    full = stochastic_floor(rhos, full_batch=True, chains=1)[:, 0] - x_star
    rows = [[rho, (rho / 2) ** 2, s ** 2, f ** 2]
            for rho, s, f in zip(rhos, stochastic, full)]
    slope = np.polyfit(np.log(rhos[1:]), np.log(stochastic[1:] ** 2), 1)[0]
    measured = stochastic[1:] ** 2 / (rhos[1:] / 2) ** 2
    verdict = ["constant-rho stochastic SAM stalls O(rho^2) away (Si & Yun 2023)",
               f"1-D, two examples: squared distance / (rho/2)^2 = "
               f"{measured.min():.2f}-{measured.max():.2f} for rho 0.05-0.4, log-log "
               f"slope {slope:.2f}; full-batch SAM at most {np.max(full ** 2):.1e}",
               "held" if abs(slope - 2) < 0.1 else "did not hold"]
    return (table(["rho", "predicted (rho/2)^2", "stochastic SAM: squared distance",
                   "full-batch SAM: squared distance"], rows)
            + f"\n\nlog-log slope of the stochastic floor against rho: {slope:.3f}",
            verdict)


def normalisation() -> str:
    eigenvalues = np.array([4.0, 2.0, 1.0, 0.5])
    hessian, q = rotated(eigenvalues, seed=4)
    x0 = q @ np.ones(4)
    rows, below_gd = [], {"usam": 0, "sam": 0, "runs": 0}
    for lr_lambda in (1.5, 1.9, 2.1):
        lr = lr_lambda / 4.0
        for rho in (0.05, 0.1, 0.3, 1.0):
            x = x0.copy()
            for _ in range(200):
                x = x - lr * hessian @ (x + rho * hessian @ x)
            sam = sam_run(hessian, x0, lr, rho, steps=200)
            predicted = (f"{lr_lambda * rho / (2 - lr_lambda):.5g}" if lr_lambda < 2
                         else "diverges")
            if lr_lambda < 2:  # GD is stable: does each method stay bounded?
                below_gd["runs"] += 1
                below_gd["usam"] += int(not np.linalg.norm(x) <= 2.0)
                below_gd["sam"] += int(not abs(np.linalg.norm(sam[-1]) / float(
                    predicted) - 1) < 1e-3)
            rows.append([lr_lambda, rho, analysis.usam_edge(lr, rho),
                         f"{np.linalg.norm(x):.3g}", f"{np.linalg.norm(sam[-1]):.3g}",
                         predicted])
    verdict = ["normalisation keeps SAM stable where USAM diverges (Dai, Ahn & Sra 2023)",
               f"lr lambda_max < 2 (GD stable), rho 0.05-1: USAM diverged in "
               f"{below_gd['usam']} of {below_gd['runs']} runs, SAM left its bounded "
               f"2-cycle in {below_gd['sam']}; at lr lambda_max = 2.1 both diverge",
               "held" if below_gd["sam"] == 0 and below_gd["usam"] > 0
               else "did not hold"]
    return (table(["lr lambda_max", "rho", "USAM edge (lambda_max = 4)",
                   "USAM norm x_200", "SAM norm x_200", "SAM 2-cycle amplitude"], rows)
            + "\n\nx_0 has norm 2; inf: beyond float64.", verdict)


def main(argv):
    np.seterr(over="ignore", invalid="ignore")  # USAM's diverging iterates overflow
    sections = [
        (f"(a) Edges of stability at lr = {LR}, rho = {RHO}", *edges()),
        (f"(a) SAM run to its 2-cycle (rho = {RHO}): it settles on its own edge",
         *settled_edges()),
        ("(b) The 2-cycle along the top eigenvector (lambda = 4, ..., 0.25; lr = 0.3)",
         *two_cycle()),
        ("(c) Stochastic SAM's floor (mean over 4096 chains, 4000 steps)", *floor()),
        ("(d) Normalisation: USAM against SAM (lambda = 4, 2, 1, 0.5; 200 steps)",
         *normalisation()),
    ]
    verdicts = table(["prediction", "checked on a quadratic", "verdict"],
                     [verdict for _, _, verdict in sections])
    if "--verdicts" in argv:  # the short form, for the README
        print(verdicts)
        return
    print("\n\n".join(f"#### {title}\n\n{body}" for title, body, _ in sections)
          + f"\n\n#### Verdicts\n\n{verdicts}")


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
