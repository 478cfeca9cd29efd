// livehead browser client: mic (or a local audio file) and/or camera → WebRTC → the server's avatar video +
// delayed audio.
//
// Signalling: POST /offer {sdp, type, avatar?} → {sdp, type}; no trickle ICE (the offer is sent once
// gathering is complete, as aiortc expects). The offer carries the mic audio (sendrecv: the server sends
// the speech back delayed by the pipeline latency, in sync with the video), a video transceiver (recvonly,
// or sendrecv with the camera: the server tracks the face and drives the avatar with it; with a mic the camera
// moves head and eyes and the voice the mouth, "camera only" moves everything) and a data channel for control
// messages ({"type": "clear"} = barge-in, {"type": "neutral"} = take the camera's face now as its neutral).
//
// Stats come from RTCPeerConnection.getStats(): inbound video fps and framesDecoded, first-frame delay
// (from the "start" click to the first decoded frame) and the selected candidate pair's round-trip time.
// Everything is exposed on `window.livehead` for tests and the console.

const $ = (id) => document.getElementById(id);

const TOKEN_KEY = 'livehead.token';
const ICE_GATHER_TIMEOUT_MS = 3000;
const FIRST_FRAME_POLL_MS = 40;
const STATS_EVERY_MS = 1000;
const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

const state = {
  pc: null,
  dc: null,
  localStream: null,
  cameraTrack: null,     // the camera's video track while it drives the avatar
  remoteStream: null,
  audioCtx: null,
  fileSource: null,
  avatarId: null,
  startedAt: null,       // performance.now() of the start click
  firstFrameMs: null,    // start click → first decoded frame
  connectedMs: null,     // start click → connection 'connected' (the server's clock starts on the first mic audio)
  statsTimer: null,
  prev: null,            // previous stats sample (for rates)
  stats: {},             // latest figures (see readStats)
  phase: 'idle',
};

// ------------------------------------------------------------------------------------------ helpers

function log(message) {
  const item = document.createElement('li');
  const t = state.startedAt === null ? '' : `+${((performance.now() - state.startedAt) / 1000).toFixed(2)} s `;
  item.textContent = t + message;
  $('log').prepend(item);
  while ($('log').children.length > 50) $('log').lastChild.remove();
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message || '';
  el.hidden = !message;
}

function setPhase(phase) {
  state.phase = phase;
  $('call-state').textContent = phase;
  const live = phase !== 'idle';
  $('start-mic').disabled = live;
  $('play-file').disabled = live;
  $('start-camera').disabled = live;
  $('use-camera').disabled = live;
  $('stop').disabled = !live;
  const open = live && state.dc && state.dc.readyState === 'open';
  $('barge-in').disabled = !open;
  $('neutral').disabled = !(open && state.cameraTrack);
}

function authHeaders(extra = {}) {
  const token = $('token').value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

// The server answers errors as JSON {"error": "..."}; anything else is shown as status + text.
async function errorText(response) {
  const body = await response.text();
  try {
    const parsed = JSON.parse(body);
    if (parsed && parsed.error) return `${parsed.error} (HTTP ${response.status})`;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}${body ? ': ' + body.slice(0, 200) : ''}`;
}

// ------------------------------------------------------------------------------------------ avatar

async function uploadPortrait() {
  showError('avatar-error', '');
  const file = $('portrait-file').files[0];
  if (!file) {
    showError('avatar-error', 'choose a portrait image first');
    return;
  }
  if (file.size > MAX_UPLOAD_BYTES) {
    showError('avatar-error', `${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is 10 MB`);
    return;
  }
  const form = new FormData();
  form.append('image', file, file.name);
  $('upload').disabled = true;
  try {
    const response = await fetch('/avatars', { method: 'POST', body: form, headers: authHeaders() });
    if (!response.ok) {
      showError('avatar-error', `upload refused: ${await errorText(response)}`);
      return;
    }
    const { id } = await response.json();
    state.avatarId = id;
    $('avatar-id').textContent = id;
    $('avatar-uploaded').disabled = false;
    $('avatar-uploaded').checked = true;
    const preview = $('portrait-preview');
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    log(`avatar ${id} uploaded`);
  } catch (err) {
    showError('avatar-error', `upload failed: ${err.message}`);
  } finally {
    $('upload').disabled = false;
  }
}

function chosenAvatar() {
  return $('avatar-uploaded').checked && state.avatarId ? state.avatarId : null;
}

// ------------------------------------------------------------------------------------------ sources

async function cameraTrack() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('this page cannot use the camera (open it over https or from localhost)');
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 25, max: 30 } },
      audio: false,
    });
  } catch (err) {
    throw new Error(`camera unavailable: ${err.name}${err.message ? ' – ' + err.message : ''}`);
  }
  const preview = $('camera-preview');
  preview.srcObject = stream;
  preview.hidden = false;
  return stream.getVideoTracks()[0];
}

async function micStream() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('this page cannot use the microphone (open it over https or from localhost)');
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    throw new Error(`microphone unavailable: ${err.name}${err.message ? ' – ' + err.message : ''}`);
  }
}

// A local audio file decoded with WebAudio, played into a MediaStreamAudioDestinationNode whose track
// is sent as the mic. Playback starts once the connection is up; the track stays (silent) afterwards.
async function fileStream(file) {
  state.audioCtx = new AudioContext();
  let buffer;
  try {
    buffer = await state.audioCtx.decodeAudioData(await file.arrayBuffer());
  } catch (err) {
    throw new Error(`cannot decode ${file.name} as audio (${err.message || err.name}); try wav, mp3, ogg or m4a`);
  }
  const destination = state.audioCtx.createMediaStreamDestination();
  const source = state.audioCtx.createBufferSource();
  source.buffer = buffer;
  source.connect(destination);
  source.onended = () => {
    if (state.fileSource === source) log(`file ended (${buffer.duration.toFixed(1)} s)`);
  };
  state.fileSource = source;
  log(`decoded ${file.name}: ${buffer.duration.toFixed(2)} s, ${buffer.sampleRate} Hz, ${buffer.numberOfChannels} ch`);
  return destination.stream;
}

function startFilePlayback() {
  const source = state.fileSource;
  if (!source || source.started) return;
  source.started = true;
  state.audioCtx.resume().then(() => source.start());
  log('file playback started');
}

// ------------------------------------------------------------------------------------------ call

function waitIceGathering(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS); // send what was gathered so far
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function start(kind) {
  showError('call-error', '');
  if (state.pc) return;
  state.startedAt = performance.now();
  state.firstFrameMs = null;
  state.connectedMs = null;
  state.prev = null;
  state.stats = {};
  renderStats();
  $('log').replaceChildren();
  setPhase('starting');
  try {
    if (kind === 'file') {
      const file = $('audio-file').files[0];
      if (!file) throw new Error('choose an audio file first');
      state.localStream = await fileStream(file);
    } else if (kind === 'mic') {
      state.localStream = await micStream();
    } else {
      state.localStream = new MediaStream();
    }
    const [track] = state.localStream.getAudioTracks();
    if (track) log(`${kind === 'file' ? 'file' : 'microphone'} track: ${track.label || track.id}`);
    state.cameraTrack = kind === 'camera' || $('use-camera').checked ? await cameraTrack() : null;
    if (state.cameraTrack) {
      state.localStream.addTrack(state.cameraTrack);
      log(`camera track: ${state.cameraTrack.label || state.cameraTrack.id}`);
    }

    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    state.remoteStream = new MediaStream();
    $('video').srcObject = state.remoteStream;

    const dc = pc.createDataChannel('control');
    state.dc = dc;
    dc.onopen = () => { log('control channel open'); setPhase(state.phase); };
    dc.onclose = () => setPhase(state.phase);
    dc.onmessage = (event) => log(`server: ${String(event.data).slice(0, 200)}`);

    if (track) pc.addTransceiver(track, { direction: 'sendrecv', streams: [state.localStream] });
    else pc.addTransceiver('audio', { direction: 'recvonly' });
    if (state.cameraTrack) pc.addTransceiver(state.cameraTrack, { direction: 'sendrecv', streams: [state.localStream] });
    else pc.addTransceiver('video', { direction: 'recvonly' });

    pc.ontrack = (event) => {
      state.remoteStream.addTrack(event.track);
      log(`receiving ${event.track.kind}`);
      $('video').play().catch((err) => log(`autoplay blocked (${err.name}): click the video to play`));
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      log(`connection ${s}`);
      if (s === 'connected') {
        if (state.connectedMs === null) state.connectedMs = performance.now() - state.startedAt;
        const source = { file: 'file', mic: 'mic', camera: 'camera' }[kind];
        setPhase(`live (${source}${state.cameraTrack && kind !== 'camera' ? ' + camera' : ''})`);
        startFilePlayback();
      } else if (s === 'failed') {
        showError('call-error', 'the WebRTC connection failed (no network path between browser and server)');
        stop();
      } else if (s === 'disconnected') {
        setPhase('reconnecting…');
      }
    };

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitIceGathering(pc);
    const body = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
    const avatar = chosenAvatar();
    if (avatar) body.avatar = avatar;
    const response = await fetch('/offer', {
      method: 'POST',
      headers: authHeaders({ 'Content-Type': 'application/json' }),
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`offer refused: ${await errorText(response)}`);
    const answer = await response.json();
    if (state.pc !== pc) return; // stopped while waiting
    await pc.setRemoteDescription(answer);
    log(`answer received${avatar ? ` (avatar ${avatar})` : ''}`);
    checkServer();
    setPhase('connecting');
    watchFirstFrame(pc);
    state.statsTimer = setInterval(() => updateStats(pc), STATS_EVERY_MS);
  } catch (err) {
    showError('call-error', err.message || String(err));
    stop();
  }
}

function stop() {
  if (state.statsTimer) clearInterval(state.statsTimer);
  state.statsTimer = null;
  if (state.fileSource) {
    try { if (state.fileSource.started) state.fileSource.stop(); } catch (_) { /* already ended */ }
    state.fileSource = null;
  }
  if (state.dc) state.dc.close();
  if (state.pc) state.pc.close();
  if (state.localStream) state.localStream.getTracks().forEach((t) => t.stop());
  if (state.audioCtx) state.audioCtx.close();
  if (state.pc) log('stopped');
  $('camera-preview').srcObject = null;
  $('camera-preview').hidden = true;
  Object.assign(state, { pc: null, dc: null, localStream: null, audioCtx: null, cameraTrack: null });
  setPhase('idle');
  checkServer();
}

// Barge-in: the server drops its queued audio and frames; a playing file is stopped too (the user
// interrupted it), the connection stays up and the avatar returns to idle.
function bargeIn() {
  if (!state.dc || state.dc.readyState !== 'open') return;
  state.dc.send(JSON.stringify({ type: 'clear' }));
  if (state.fileSource && state.fileSource.started) {
    try { state.fileSource.stop(); } catch (_) { /* already ended */ }
    state.fileSource = null;
  }
  log('barge-in sent');
}

// The camera's neutral: the server takes the next face it tracks as the face at rest.
function setNeutral() {
  if (!state.dc || state.dc.readyState !== 'open' || !state.cameraTrack) return;
  state.dc.send(JSON.stringify({ type: 'neutral' }));
  log('neutral face sent');
}

// ------------------------------------------------------------------------------------------ stats

// First decoded frame: getStats polled every 40 ms, or the video element's first presented frame,
// whichever is seen first.
function watchFirstFrame(pc) {
  const mark = (how) => {
    if (state.firstFrameMs !== null || state.pc !== pc) return;
    state.firstFrameMs = performance.now() - state.startedAt;
    state.stats.firstFrameMs = state.firstFrameMs;
    log(`first frame after ${state.firstFrameMs.toFixed(0)} ms (${how})`);
    renderStats();
  };
  const video = $('video');
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => mark('presented'));
  const poll = async () => {
    if (state.firstFrameMs !== null || state.pc !== pc) return;
    const { video: inbound } = await collect(pc);
    if (inbound && inbound.framesDecoded > 0) mark('getStats');
    else setTimeout(poll, FIRST_FRAME_POLL_MS);
  };
  poll();
}

async function collect(pc) {
  const report = await pc.getStats();
  let video = null;
  let audio = null;
  let selectedPair = null;
  const pairs = new Map();
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
    else if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s;
    else if (s.type === 'transport' && s.selectedCandidatePairId) selectedPair = s.selectedCandidatePairId;
    else if (s.type === 'candidate-pair') pairs.set(s.id, s);
  });
  let pair = selectedPair ? pairs.get(selectedPair) : null;
  if (!pair) pair = [...pairs.values()].find((p) => p.nominated && p.state === 'succeeded') || null;
  return { video, audio, pair };
}

async function updateStats(pc) {
  if (state.pc !== pc) return;
  let sample;
  try {
    sample = await collect(pc);
  } catch (_) {
    return; // the connection closed meanwhile
  }
  const { video, audio, pair } = sample;
  const s = state.stats;
  if (video) {
    const now = video.timestamp;
    if (state.prev && now > state.prev.timestamp) {
      const dt = (now - state.prev.timestamp) / 1000;
      s.fps = (video.framesDecoded - state.prev.framesDecoded) / dt;
      s.bitrateKbps = ((video.bytesReceived - state.prev.bytesReceived) * 8) / dt / 1000;
    }
    state.prev = { timestamp: now, framesDecoded: video.framesDecoded || 0, bytesReceived: video.bytesReceived || 0 };
    s.framesDecoded = video.framesDecoded || 0;
    s.framesDropped = video.framesDropped || 0;
    s.width = video.frameWidth;
    s.height = video.frameHeight;
  }
  if (audio && audio.jitterBufferEmittedCount) {
    s.audioJitterBufferMs = (audio.jitterBufferDelay / audio.jitterBufferEmittedCount) * 1000;
  }
  if (pair && pair.currentRoundTripTime !== undefined) s.rttMs = pair.currentRoundTripTime * 1000;
  s.connection = pc.connectionState;
  s.firstFrameMs = state.firstFrameMs;
  renderStats();
}

function fmt(value, digits, unit) {
  return value === undefined || value === null || Number.isNaN(value) ? '–' : `${value.toFixed(digits)}${unit}`;
}

function renderStats() {
  const s = state.stats;
  $('stat-fps').textContent = fmt(s.fps, 1, '');
  $('stat-frames').textContent = s.framesDecoded === undefined ? '–' : String(s.framesDecoded);
  $('stat-dropped').textContent = s.framesDropped === undefined ? '–' : String(s.framesDropped);
  $('stat-first-frame').textContent = fmt(s.firstFrameMs, 0, ' ms');
  $('stat-rtt').textContent = fmt(s.rttMs, 1, ' ms');
  $('stat-size').textContent = s.width ? `${s.width}×${s.height}` : '–';
  $('stat-bitrate').textContent = fmt(s.bitrateKbps, 0, ' kbit/s');
  $('stat-jitter-buffer').textContent = fmt(s.audioJitterBufferMs, 0, ' ms');
  $('stat-connection').textContent = s.connection || '–';
}

// ------------------------------------------------------------------------------------------ page

async function checkServer() {
  try {
    const response = await fetch('/healthz', { headers: authHeaders() });
    if (!response.ok) {
      $('server-status').textContent = `server: ${await errorText(response)}`;
      return;
    }
    const h = await response.json().catch(() => ({}));
    const parts = ['server ready'];
    if (h.preset) parts.push(`preset ${h.preset}${h.device ? ' on ' + h.device : ''}`);
    if (h.max_sessions !== undefined) parts.push(`${h.sessions ?? 0}/${h.max_sessions} sessions`);
    if (typeof h.latency_s === 'number') parts.push(`pipeline latency ${(h.latency_s * 1000).toFixed(0)} ms`);
    $('server-status').textContent = parts.join(' · ');
  } catch (err) {
    $('server-status').textContent = `server unreachable (${err.message})`;
  }
}

function init() {
  const token = $('token');
  token.value = sessionStorage.getItem(TOKEN_KEY) || '';
  token.addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, token.value.trim()));
  $('token-form').addEventListener('submit', (event) => event.preventDefault());
  $('upload').addEventListener('click', uploadPortrait);
  $('start-mic').addEventListener('click', () => start('mic'));
  $('play-file').addEventListener('click', () => start('file'));
  $('start-camera').addEventListener('click', () => start('camera'));
  $('neutral').addEventListener('click', setNeutral);
  $('stop').addEventListener('click', stop);
  $('barge-in').addEventListener('click', bargeIn);
  $('video').addEventListener('click', () => $('video').play().catch(() => {}));
  window.addEventListener('pagehide', stop);
  setPhase('idle');
  renderStats();
  checkServer();
}

window.livehead = { state, start, stop, bargeIn, setNeutral, collect };
init();
