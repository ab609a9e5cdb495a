// Phát trực tiếp: the microphone (getUserMedia, MediaRecorder WebM/Opus) in 100 ms
// chunks over a WebSocket to the controller, a level meter, Talk and Stop.
(function () {
  "use strict";
  const root = document.getElementById("live-voice");
  if (!root) return;
  const talk = document.getElementById("lv-talk");
  const stop = document.getElementById("lv-stop");
  const status = document.getElementById("lv-status");
  const meter = document.getElementById("lv-meter");
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const CHUNK_MS = 100;
  let ws = null, recorder = null, mic = null, audio = null, ended = false;

  function say(text) { status.textContent = text; }

  function meterOn(stream) {
    audio = new AudioContext();
    const analyser = audio.createAnalyser();
    analyser.fftSize = 1024;
    audio.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    (function draw() {
      if (!audio) return;
      analyser.getFloatTimeDomainData(buf);
      let peak = 0;
      for (const x of buf) peak = Math.max(peak, Math.abs(x));
      meter.value = peak;
      requestAnimationFrame(draw);
    })();
  }

  function cleanup() {
    if (recorder && recorder.state !== "inactive") recorder.stop();
    recorder = null;
    if (mic) mic.getTracks().forEach((tr) => tr.stop());
    mic = null;
    if (audio) audio.close();
    audio = null;
    meter.value = 0;
    talk.disabled = false;
    stop.disabled = true;
  }

  function record() {
    const type = "audio/webm;codecs=opus";
    recorder = new MediaRecorder(mic, { mimeType: type, audioBitsPerSecond: 64000 });
    recorder.ondataavailable = (ev) => {
      if (ev.data.size && ws && ws.readyState === WebSocket.OPEN) ws.send(ev.data);
    };
    recorder.start(CHUNK_MS);
  }

  talk.addEventListener("click", async () => {
    const targets = [...root.querySelectorAll('input[name="target"]:checked')].map((i) => i.value);
    if (!targets.length) { say(root.dataset.noTarget); return; }
    const level = document.getElementById("lv-level").value;
    talk.disabled = true;
    try {
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      say(root.dataset.noMic);
      cleanup();
      return;
    }
    meterOn(mic);
    ended = false;
    say(root.dataset.connecting);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/ws/live-voice?lang=${document.documentElement.lang}`);
    ws.onopen = () => ws.send(JSON.stringify({ csrf_token: csrf, targets, level }));
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.state === "open") {
        record();
        stop.disabled = false;
      } else if (msg.state === "on_air") {
        setTimeout(() => { if (!ended) say(root.dataset.onAir); }, msg.lead_ms);
      } else if (msg.state === "ended") {
        ended = true;
        say(root.dataset.ended);
        cleanup();
      } else if (msg.state === "error") {
        ended = true;
        say(msg.message);
        cleanup();
      }
    };
    ws.onclose = () => {
      if (!ended) say(root.dataset.lost);
      ended = true;
      cleanup();
    };
  });

  stop.addEventListener("click", () => {
    stop.disabled = true;
    if (recorder && recorder.state !== "inactive") recorder.stop();
    if (ws && ws.readyState === WebSocket.OPEN) ws.send("stop");
  });
})();
