// The video visit: camera and microphone, the signalling WebSocket, the waiting room, chat,
// and one RTCPeerConnection that is rebuilt whenever both sides are (back) in the room. The
// clinician makes the offer. A dropped WebSocket reconnects with the same tab id, so the
// server gives the seat back instead of refusing a second tab.
(() => {
  "use strict";
  const root = document.getElementById("visit");
  if (!root) return;
  const appointment = root.dataset.appointment;
  const seat = root.dataset.seat;
  const iceServers = JSON.parse(root.dataset.iceServers || "[]");
  const statusLine = document.getElementById("visit-status");
  const errorLine = document.getElementById("visit-error");
  const remoteVideo = document.getElementById("remote-video");
  const localVideo = document.getElementById("local-video");
  const tabKey = "medmesh-visit-tab-" + appointment;
  let tab = sessionStorage.getItem(tabKey);
  if (!tab) {
    tab = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));
    sessionStorage.setItem(tabKey, tab);
  }

  let socket = null;
  let pc = null;
  let local = null;
  let screen = null;
  let ended = false;
  let retry = 500;
  let queue = Promise.resolve();
  const state = { audio: true, video: true };

  const say = (text) => { statusLine.textContent = text; };
  const fail = (text) => { errorLine.textContent = text; errorLine.hidden = false; };
  const send = (message) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  };

  async function media() {
    if (local) return local;
    try {
      local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch (error) {
      fail("Your camera or microphone could not be opened: " + error.message);
      local = new MediaStream();
    }
    localVideo.srcObject = local;
    return local;
  }

  function closePeer() {
    if (pc) { pc.ontrack = null; pc.onicecandidate = null; pc.close(); }
    pc = null;
    window.medmeshVisitPeer = null;
  }

  async function newPeer() {
    closePeer();
    pc = new RTCPeerConnection({ iceServers });
    window.medmeshVisitPeer = pc; // for the browser test's getStats()
    const stream = await media();
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    pc.ontrack = (event) => { remoteVideo.srcObject = event.streams[0]; };
    pc.onicecandidate = (event) => { if (event.candidate) send({ type: "candidate", data: event.candidate.toJSON() }); };
    pc.onconnectionstatechange = () => {
      if (pc && pc.connectionState === "connected") say("In the visit.");
      if (pc && pc.connectionState === "failed") say("The connection was lost; reconnecting…");
    };
    return pc;
  }

  async function onMessage(message) {
    switch (message.type) {
      case "waiting":
        say("You are in the waiting room. Your clinician will let you in.");
        break;
      case "admitted":
        say("You were let in; waiting for your clinician to connect…");
        break;
      case "alone":
        say("Waiting for the patient to join.");
        break;
      case "knock": {
        const knock = document.getElementById("knock");
        document.getElementById("knock-name").textContent = message.name;
        knock.hidden = false;
        say(message.name + " is waiting.");
        break;
      }
      case "start": {
        const knock = document.getElementById("knock");
        if (knock) knock.hidden = true;
        say("Connecting the call with " + message.peer + "…");
        const peer = await newPeer();
        if (message.offerer) {
          await peer.setLocalDescription(await peer.createOffer());
          send({ type: "offer", data: peer.localDescription.toJSON() });
        }
        break;
      }
      case "offer": {
        const peer = pc || await newPeer();
        await peer.setRemoteDescription(message.data);
        await peer.setLocalDescription(await peer.createAnswer());
        send({ type: "answer", data: peer.localDescription.toJSON() });
        break;
      }
      case "answer":
        if (pc) await pc.setRemoteDescription(message.data);
        break;
      case "candidate":
        if (pc && message.data) { try { await pc.addIceCandidate(message.data); } catch (e) { /* stale */ } }
        break;
      case "media":
        document.getElementById("peer-media").textContent =
          (message.data && !message.data.audio ? "The other side is muted. " : "") +
          (message.data && !message.data.video ? "Their camera is off." : "");
        break;
      case "peer-left":
        closePeer();
        remoteVideo.srcObject = null;
        say("The other participant left or lost the connection; waiting for them to come back…");
        break;
      case "chat": {
        const item = document.createElement("li");
        const who = document.createElement("strong");
        who.textContent = message.from + ": ";
        item.append(who, document.createTextNode(message.text));
        document.getElementById("chat-log").append(item);
        break;
      }
      case "error":
        fail(message.message);
        break;
      default:
        break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/visits/" + appointment + "/signal?tab=" + encodeURIComponent(tab));
    socket.onopen = () => { retry = 500; };
    // One message at a time: an offer must wait for the peer that "start" is still building.
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      queue = queue.then(() => onMessage(message)).catch((e) => fail(e.message));
    };
    socket.onclose = (event) => {
      if (event.code >= 4400 && event.code < 4500 || event.code === 4000) {
        ended = ended || event.code !== 4000;
        if (event.code !== 4000) say("Not connected.");
        return;
      }
      if (ended) return;
      say("The connection dropped; reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 8000);
    };
  }

  function toggle(kind, button, labels) {
    state[kind] = !state[kind];
    if (local) for (const t of (kind === "audio" ? local.getAudioTracks() : local.getVideoTracks())) t.enabled = state[kind];
    button.setAttribute("aria-pressed", String(!state[kind]));
    button.textContent = state[kind] ? labels[0] : labels[1];
    send({ type: "media", data: { audio: state.audio, video: state.video } });
  }

  document.getElementById("mute").addEventListener("click", (e) => toggle("audio", e.currentTarget, ["Mute", "Unmute"]));
  document.getElementById("camera").addEventListener("click", (e) => toggle("video", e.currentTarget, ["Camera off", "Camera on"]));
  const share = document.getElementById("share");
  if (share) {
    share.addEventListener("click", async () => {
      const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === "video");
      if (!sender) { fail("Screen sharing starts once the call is connected."); return; }
      if (screen) {
        screen.getTracks().forEach((t) => t.stop());
        screen = null;
        await sender.replaceTrack(local.getVideoTracks()[0] || null);
        share.textContent = "Share screen"; share.setAttribute("aria-pressed", "false");
        return;
      }
      try {
        screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
      } catch (error) { fail("The screen could not be shared: " + error.message); return; }
      const track = screen.getVideoTracks()[0];
      track.addEventListener("ended", () => { if (screen) share.click(); });
      await sender.replaceTrack(track);
      share.textContent = "Stop sharing"; share.setAttribute("aria-pressed", "true");
    });
  }
  const admit = document.getElementById("admit");
  if (admit) admit.addEventListener("click", () => send({ type: "admit" }));
  document.getElementById("leave").addEventListener("click", () => {
    ended = true;
    closePeer();
    if (socket) socket.close(1000, "left");
    if (local) local.getTracks().forEach((t) => t.stop());
    say("You left the visit.");
  });
  document.getElementById("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("chat-text");
    if (!input.value.trim()) { fail("The chat message is empty."); return; }
    send({ type: "chat", text: input.value });
    input.value = "";
  });
  media().then(connect);
})();
