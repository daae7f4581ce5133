// The /compare page's "In this browser" runner: SmolLM2 on llama.cpp compiled for the browser
// (wllama), served by the app with its model file; nothing comes from another host.
//
// One run: ask the app for the rendered prompt and sampling settings (the same grounded
// messages the server models get, through the GGUF's chat template), load the model once
// per page (from cache storage when this browser has it, else downloaded and checked
// against its SHA-256), stream the answer into the page, then send it back for the support
// check. Uses compare.html's panel(), record(), checked(), seconds() and call().

const CACHE = "browser-runner-models";
const MB = 1024 * 1024;
const state = { setup: null, ran: null, notes: [], logs: [] };
const el = (id) => document.getElementById(id);

function status(message) {
  el("browser-status").textContent = message;
}

// Failures of the runner only; the server models keep working.
class RunnerError extends Error {}

async function setup() {
  if (state.setup) return state.setup;
  try {
    state.setup = await (await call("/compare/browser/setup")).json();
  } catch (error) {
    state.setup = { installed: false, problem: `The in-browser runner cannot start: ${error.message}` };
  }
  return state.setup;
}

// What this browser can do, in words, before anything is downloaded.
function capabilities() {
  if (typeof WebAssembly !== "object") {
    throw new RunnerError("This browser cannot run WebAssembly, so the model cannot run in it: use the server models.");
  }
  const cores = navigator.hardwareConcurrency || 1;
  // As the server's EMBEDDED_THREADS: one core stays free (here for the page and the browser),
  // and WebAssembly threads waiting on a busy core spin, so too many is far slower than too few.
  // Larger machines count two logical cores per physical one. `/compare?threads=N` overrides.
  const asked = Number(new URLSearchParams(location.search).get("threads"));
  const wanted = asked >= 1 ? Math.floor(asked) : cores <= 4 ? Math.max(1, cores - 1) : Math.ceil(cores / 2);
  const threads = self.crossOriginIsolated && typeof SharedArrayBuffer === "function" ? wanted : 1;
  const note = threads < wanted
    ? "WebAssembly threads are not available here (the page is not cross-origin isolated), so the model runs on one thread."
    : "";
  return { threads, note };
}

// WebGPU, tried in the page first so that a missing or broken adapter is a sentence, not a crash.
async function probeWebGPU() {
  if (!navigator.gpu) return { ok: false, reason: "this browser has no WebGPU" };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { ok: false, reason: "no WebGPU adapter is available" };
    const info = adapter.info || {};
    const name = info.description || [info.vendor, info.architecture].filter(Boolean).join(" ") || "unnamed adapter";
    const device = await adapter.requestDevice();
    device.destroy();
    // Said when llama.cpp puts no layer on the adapter: seen with SwiftShader, which lacks shader-f16.
    return { ok: true, name, f16: adapter.features.has("shader-f16") };
  } catch (error) {
    return { ok: false, reason: `WebGPU failed: ${error.message || error}` };
  }
}

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The model file: from cache storage when this browser has this exact version, else downloaded
// (resuming with a range request if the connection drops), checked, and kept for next time.
async function modelBlob(model) {
  const key = `${model.url}?sha256=${model.sha256}`;
  const cache = self.caches ? await caches.open(CACHE).catch(() => null) : null;
  const kept = cache && (await cache.match(key));
  if (kept) return { blob: await kept.blob(), cached: true };

  const parts = [];
  let received = 0;
  for (let attempt = 0; received < model.size && attempt < 3; attempt++) {
    const headers = received ? { Range: `bytes=${received}-`, "If-Range": `"${model.sha256}"` } : {};
    let response;
    try {
      response = await fetch(model.url, { headers });
      if (response.status === 200 && received) { parts.length = 0; received = 0; }  // the app sent it whole
      else if (!response.ok) throw new Error(`the app answered ${response.status}`);
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parts.push(value);
        received += value.length;
        status(`Downloading the model: ${(received / MB).toFixed(0)} of ${(model.size / MB).toFixed(0)} MB…`);
      }
    } catch (error) {
      if (attempt === 2 || !response) {
        throw new RunnerError(
          `The model download was cut at ${(received / MB).toFixed(0)} of ${(model.size / MB).toFixed(0)} MB ` +
          `(${error.message}). Check that the app is still running, then press Run again.`);
      }
    }
  }
  if (received !== model.size) {
    throw new RunnerError(`The model download was cut at ${(received / MB).toFixed(0)} of ` +
      `${(model.size / MB).toFixed(0)} MB. Check that the app is still running, then press Run again.`);
  }
  status("Checking the model file's SHA-256…");
  const blob = new Blob(parts, { type: "application/octet-stream" });
  const actual = await sha256Hex(await blob.arrayBuffer());
  if (actual !== model.sha256) {
    throw new RunnerError(`The downloaded model file failed its checksum (SHA-256 ${actual.slice(0, 12)}…, ` +
      `expected ${model.sha256.slice(0, 12)}…), so it was not used or kept. Press Run to download it again.`);
  }
  if (cache) {
    try {
      await cache.put(key, new Response(blob, { headers: { "Content-Type": "application/octet-stream" } }));
    } catch (error) {
      state.notes.push(`The model could not be kept in this browser's storage (${error.message}); ` +
        "it will be downloaded again next time.");
    }
  }
  return { blob, cached: false };
}

function wordsFor(error) {
  const message = String((error && error.message) || error);
  if (error instanceof RunnerError) return message;
  if (/memory|allocation|out of bounds|OOM/i.test(message)) {
    return `The browser ran out of memory running the model (${message}). Close other tabs, or use the server models.`;
  }
  return `The in-browser model failed: ${message}`;
}

// Loads wllama with the model, on WebGPU if `gpu`, else on WebAssembly threads.
async function start(blob, gpu, threads, nCtx) {
  const { Wllama } = await import(state.setup.assets["wllama.js"]);
  // llama.cpp's log says where the layers went; kept for that and for a look from the console.
  const logs = [];
  const keep = (...args) => {
    logs.push(args.join(" "));
    state.logs.push(args.join(" "));
  };
  const wllama = new Wllama({ default: state.setup.assets["wllama.wasm"] }, {
    logger: { debug: keep, log: keep, warn: keep, error: (...args) => { keep(...args); console.error(...args); } },
  });
  // Browsers without JSPI or Memory64 get the compatibility build, from the app too (not a CDN).
  wllama.setCompat({ worker: state.setup.assets["compat/wllama.js"], wasm: state.setup.assets["compat/wllama.wasm"] });
  try {
    await wllama.loadModel([blob], { n_ctx: nCtx, n_threads: threads, n_gpu_layers: gpu ? 999 : 0 });
  } catch (error) {
    await wllama.exit().catch(() => {});
    throw error;
  }
  const offloaded = logs.map((line) => /offloaded (\d+)\/(\d+) layers to GPU/.exec(line)).find(Boolean);
  return { wllama, onGpu: gpu && !!offloaded && Number(offloaded[1]) > 0, threads: wllama.getNumThreads() };
}

async function load(nCtx) {
  const started = performance.now();
  state.logs = [];
  const { threads, note } = capabilities();
  if (note) state.notes.push(note);
  status("Looking for the model in this browser's storage…");
  const { blob, cached } = await modelBlob(state.setup.model);
  status("Starting llama.cpp in the page…");
  const gpu = state.gpuFailed ? { ok: false, reason: state.gpuFailed } : await probeWebGPU();
  let ran = null;
  if (gpu.ok) {
    try {
      const loaded = await start(blob, true, threads, nCtx);
      if (loaded.onGpu) ran = { ...loaded, path: `WebGPU (${gpu.name})` };
      else {
        await loaded.wllama.exit().catch(() => {});
        gpu.reason = `WebGPU (${gpu.name}) took no layer of the model` +
          (gpu.f16 ? "" : ": the adapter has no shader-f16");
      }
    } catch (error) {
      gpu.reason = `WebGPU (${gpu.name}) failed: ${error.message || error}`;
    }
  }
  if (!ran) {
    const loaded = await start(blob, false, threads, nCtx);
    ran = { ...loaded, path: `WebAssembly, ${loaded.threads} thread${loaded.threads === 1 ? "" : "s"}` };
    ran.fallback = gpu.reason;
  }
  ran.loadS = (performance.now() - started) / 1000;
  ran.cached = cached;
  return ran;
}

function describe(ran, loadS) {
  const loaded = loadS == null ? "model already loaded in this page"
    : `model loaded in ${loadS.toFixed(2)} s (${ran.cached ? "from this browser's cache" : "downloaded"})`;
  const why = ran.fallback ? ` (${ran.fallback}, so it runs on WebAssembly)` : "";
  return `Ran on ${ran.path}${why}; ${loaded}.`;
}

// Streams one answer into `text`; returns what the page measured and llama.cpp counted.
async function generate(ran, prompt, text) {
  const s = prompt.sampling;
  const started = performance.now();
  let first = null, pieces = 0, usage = null, finish = "stop";
  // The rendered prompt as plain text: the app's template, not wllama's own chat handling.
  const stream = await ran.wllama.createCompletion({
    prompt: prompt.prompt, stream: true, max_tokens: s.max_tokens, temperature: s.temperature, top_p: s.top_p,
    top_k: s.top_k, min_p: s.min_p, repeat_penalty: s.repeat_penalty, stop: s.stop,
  });
  for await (const chunk of stream) {
    const piece = chunk.choices?.[0]?.text || "";
    if (piece) {
      first = first ?? performance.now();
      pieces += 1;
      text.textContent += piece;
      text.dataset.tokens = String(pieces);
    }
    finish = chunk.choices?.[0]?.finish_reason || finish;
    usage = chunk.usage || usage;
    state.timings = chunk.timings || state.timings;  // llama.cpp's own count, for the benchmark
  }
  const ended = performance.now();
  return {
    finish_reason: finish, prompt_tokens: usage?.prompt_tokens ?? 0, completion_tokens: usage?.completion_tokens ?? pieces,
    ttft_s: first == null ? null : (first - started) / 1000, total_s: (ended - started) / 1000,
  };
}

async function stop() {
  // A failed engine is not reused: the next run starts it again.
  if (state.ran) await state.ran.wllama.exit().catch(() => {});
  state.ran = null;
}

// One run of the browser model for the page's prompt; returns nothing, shows everything.
async function run(runNumber, request) {
  const info = await setup();
  const label = info.label || "smollm2-135m (in this browser)";
  const { text, stats, check } = panel(info.key || "browser", label);
  state.notes = [];
  try {
    if (!info.installed) throw new RunnerError(info.problem);
    const prompt = await (await call("/compare/browser/prompt", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    })).json();
    let loadS = null, measured = null;
    while (!measured) {
      try {
        if (!state.ran) {
          state.ran = await load(prompt.n_ctx);
          loadS = state.ran.loadS;
        }
        stats.textContent = "waiting for the first token…";
        status(describe(state.ran, loadS));
        measured = await generate(state.ran, prompt, text);
      } catch (error) {
        const onGpu = state.ran && state.ran.path.startsWith("WebGPU");
        await stop();
        // WebGPU that loads but fails to compute (llama.cpp has aborted on some adapters)
        // gets one more try on WebAssembly, said in the page.
        if (!onGpu || text.textContent || error instanceof RunnerError) throw error;
        state.gpuFailed = `WebGPU failed while answering: ${error.message || error}`;
      }
    }
    const ran = state.ran;
    const result = await (await call("/compare/browser/check", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...request, ...measured, answer: text.textContent, load_s: loadS, path: ran.path }),
    })).json();
    result.where = ran.path;
    stats.textContent = `first token ${seconds(result.ttft_s)} · total ${seconds(result.total_s)} · ` +
      `${result.tokens_per_s == null ? "–" : result.tokens_per_s.toFixed(1)} tokens/s · ${describe(ran, loadS)}`;
    check.textContent = [checked(result), ...state.notes].filter(Boolean).join(" ");
    record(runNumber, result);
  } catch (error) {
    stats.textContent = `⚠️ ${wordsFor(error)}`;
    status(wordsFor(error));
  }
}

async function show() {
  const info = await setup();
  if (!info.installed) {
    el("use-browser").checked = false;
    el("use-browser").disabled = true;
    status(info.problem);
    return;
  }
  const { note } = capabilities();
  status(`Ready: SmolLM2-135M (${(info.model.size / MB).toFixed(0)} MB, downloaded once and kept in this browser).` +
    (note ? ` ${note}` : ""));
}

window.browserRunner = { run, show, logs: () => state.logs, timings: () => state.timings };
show();
