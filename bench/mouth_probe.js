// bench/mouth_to_speaker.py's ear in the page, added before the page's own scripts.
// The microphone stream the page asks for also feeds an AudioWorklet that keeps every
// sample it is given with its frame number, and answers pings with the frame it has
// reached, so that Python can put each captured sample on the wall clock
// (bench/_markers.py, FrameClock). MediaRecorder's start and each chunk's instant are
// kept too. Everything waits in window.__mouth for page.evaluate.
(() => {
  "use strict";
  const wall = () => performance.timeOrigin + performance.now();
  const probe = (window.__mouth = { rate: 0, baseLatency: 0, chunks: [], pings: [], recorder: [], errors: [] });
  const TAP = `
    class MouthTap extends AudioWorkletProcessor {
      constructor() {
        super();
        this.buf = new Float32Array(4800);
        this.n = 0;
        this.first = -1;
        this.port.onmessage = (ev) => this.port.postMessage({ pong: ev.data.ping, frame: currentFrame });
      }
      flush() {
        if (this.n) this.port.postMessage({ frame: this.first, samples: this.buf.slice(0, this.n) });
        this.n = 0;
        this.first = -1;
      }
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        if (!ch) { this.flush(); return true; }
        if (this.first >= 0 && (currentFrame !== this.first + this.n || this.n + ch.length > this.buf.length)) this.flush();
        if (this.first < 0) this.first = currentFrame;
        this.buf.set(ch, this.n);
        this.n += ch.length;
        return true;
      }
    }
    registerProcessor("mouth-tap", MouthTap);`;

  async function tap(stream) {
    const ctx = new AudioContext();
    const url = URL.createObjectURL(new Blob([TAP], { type: "text/javascript" }));
    await ctx.audioWorklet.addModule(url);
    const node = new AudioWorkletNode(ctx, "mouth-tap", { channelCount: 1, channelCountMode: "explicit" });
    ctx.createMediaStreamSource(stream).connect(node);
    const mute = ctx.createGain();
    mute.gain.value = 0; // pulled by the destination, heard by nobody
    node.connect(mute).connect(ctx.destination);
    probe.rate = ctx.sampleRate;
    probe.baseLatency = ctx.baseLatency;
    const sent = new Map();
    let id = 0;
    node.port.onmessage = (ev) => {
      const m = ev.data;
      if (m.pong !== undefined) {
        probe.pings.push([sent.get(m.pong), wall(), m.frame]);
        sent.delete(m.pong);
      } else {
        probe.chunks.push([m.frame, m.samples]);
      }
    };
    setInterval(() => { sent.set(id, wall()); node.port.postMessage({ ping: id++ }); }, 20);
    await ctx.resume();
  }

  if (!navigator.mediaDevices || !window.MediaRecorder) return; // not a secure page
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    try { await tap(stream); } catch (e) { probe.errors.push(String(e)); }
    return stream;
  };

  const start = MediaRecorder.prototype.start;
  MediaRecorder.prototype.start = function (...args) {
    if (window.__mouthTimeslice) args[0] = window.__mouthTimeslice; // the bench's --timeslice-ms
    probe.recorder.push(["start", wall(), args[0] || 0]);
    this.addEventListener("dataavailable", (ev) => probe.recorder.push(["data", wall(), ev.data.size]));
    return start.apply(this, args);
  };

  // what page.evaluate takes away: each chunk as little-endian 16-bit PCM in base64
  window.__mouthTake = () => {
    const chunks = probe.chunks.map(([frame, samples]) => {
      const pcm = new Int16Array(samples.length);
      for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32767)));
      const bytes = new Uint8Array(pcm.buffer);
      let text = "";
      for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      return [frame, btoa(text)];
    });
    return { rate: probe.rate, baseLatency: probe.baseLatency, pings: probe.pings, recorder: probe.recorder, errors: probe.errors, chunks };
  };
})();
