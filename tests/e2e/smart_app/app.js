// A small SMART App Launch client, written by hand as fhirclient.js does it: standalone launch
// with `iss` in the URL, discovery, PKCE S256, state, the code exchange and a FHIR search, all
// from the browser (so every call to medmesh is a CORS request from this page's origin).
"use strict";

const CLIENT_ID = new URLSearchParams(location.hash.slice(1)).get("client_id")
  || sessionStorage.getItem("client_id");
const SCOPE = "launch/patient openid fhirUser patient/Observation.rs patient/Patient.rs";
const status = (text) => { document.getElementById("status").textContent = text; };

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(length) {
  return base64url(crypto.getRandomValues(new Uint8Array(length)));
}

async function launch(iss) {
  const discovery = await fetch(iss + "/.well-known/smart-configuration");
  const config = await discovery.json();
  const verifier = randomText(48);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomText(16);
  const redirect = location.origin + location.pathname;
  sessionStorage.setItem("launch", JSON.stringify({
    iss, verifier, state, redirect, token: config.token_endpoint,
  }));
  sessionStorage.setItem("client_id", CLIENT_ID);
  const query = new URLSearchParams({
    response_type: "code", client_id: CLIENT_ID, redirect_uri: redirect, scope: SCOPE,
    state, aud: iss, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(config.authorization_endpoint + "?" + query.toString());
}

async function complete(params) {
  const saved = JSON.parse(sessionStorage.getItem("launch"));
  if (params.get("state") !== saved.state) throw new Error("state does not match");
  const answer = await fetch(saved.token, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: saved.redirect,
      client_id: CLIENT_ID, code_verifier: saved.verifier,
    }),
  });
  const tokens = await answer.json();
  if (!answer.ok) throw new Error(tokens.error + ": " + tokens.error_description);
  document.getElementById("patient").textContent = tokens.patient;
  const search = await fetch(saved.iss + "/Observation?patient=" + encodeURIComponent(tokens.patient), {
    headers: { Authorization: "Bearer " + tokens.access_token, Accept: "application/fhir+json" },
  });
  const bundle = await search.json();
  const list = document.getElementById("observations");
  for (const entry of bundle.entry || []) {
    const observation = entry.resource;
    const item = document.createElement("li");
    const name = observation.code.coding[0].display || observation.code.coding[0].code;
    const quantity = observation.valueQuantity || {};
    item.textContent = name + ": " + quantity.value + " " + (quantity.unit || "");
    list.appendChild(item);
  }
  status("Showing " + (bundle.entry || []).length + " observations");
}

async function main() {
  const params = new URLSearchParams(location.search);
  if (params.has("error")) {
    status("Not allowed: " + params.get("error"));
  } else if (params.has("code")) {
    await complete(params);
  } else if (params.has("iss")) {
    status("Connecting…");
    await launch(params.get("iss"));
  }
}

main().catch((error) => status("Failed: " + error.message));
