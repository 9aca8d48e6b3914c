// The passkey page: read the link token from the URL fragment (never sent to any server
// otherwise), ask the bot what it is for, run the WebAuthn ceremony, post the answer back.
"use strict";

(function () {
  const token = decodeURIComponent(location.hash.slice(1));
  const $ = (id) => document.getElementById(id);
  const title = $("title"), intro = $("intro"), summary = $("summary");
  const button = $("confirm"), status = $("status"), problem = $("problem");
  let start = null;

  function showProblem(message) {
    problem.textContent = message;
    problem.hidden = false;
    button.hidden = true;
    status.textContent = "";
    title.focus();
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!data || !data.ok) {
      throw new Error((data && data.message) || "The bot did not answer; try again in a moment.");
    }
    return data;
  }

  // base64url <-> ArrayBuffer, for browsers without the WebAuthn JSON helpers.
  const fromB64 = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)).buffer;
  const toB64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  function creationOptions(o) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    return Object.assign({}, o, {
      challenge: fromB64(o.challenge),
      user: Object.assign({}, o.user, { id: fromB64(o.user.id) }),
      excludeCredentials: (o.excludeCredentials || []).map((c) => Object.assign({}, c, { id: fromB64(c.id) })),
    });
  }

  function requestOptions(o) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    return Object.assign({}, o, {
      challenge: fromB64(o.challenge),
      allowCredentials: (o.allowCredentials || []).map((c) => Object.assign({}, c, { id: fromB64(c.id) })),
    });
  }

  function credentialJSON(c) {
    if (c.toJSON) return c.toJSON();
    const r = c.response, out = { id: c.id, rawId: toB64(c.rawId), type: c.type, clientExtensionResults: {}, response: { clientDataJSON: toB64(r.clientDataJSON) } };
    if (r.attestationObject) { out.response.attestationObject = toB64(r.attestationObject); }
    else { out.response.authenticatorData = toB64(r.authenticatorData); out.response.signature = toB64(r.signature); if (r.userHandle) out.response.userHandle = toB64(r.userHandle); }
    return out;
  }

  async function confirm() {
    button.disabled = true;
    problem.hidden = true;
    status.textContent = "Follow your browser's prompt to use your passkey…";
    let credential;
    try {
      credential = start.purpose === "enrol"
        ? await navigator.credentials.create({ publicKey: creationOptions(start.options) })
        : await navigator.credentials.get({ publicKey: requestOptions(start.options) });
    } catch (e) {
      problem.dataset.error = ((e && e.name) || "Error") + ": " + ((e && e.message) || "");  // for support and tests
      console.warn("WebAuthn ceremony failed:", e);
      button.disabled = false;
      status.textContent = "";
      problem.textContent = "No passkey was used (cancelled, timed out, or this device has no passkey for debug-access). Nothing was counted. You can try again.";
      problem.hidden = false;
      button.focus();
      return;
    }
    try {
      const done = await post("/passkey/finish", { token: token, credential: credentialJSON(credential) });
      button.hidden = true;
      status.textContent = done.message;
      title.textContent = "Done";
      title.focus();
    } catch (e) {
      showProblem(e.message);
    }
  }

  async function load() {
    if (!token) { showProblem("This page needs the link the bot sent you in Slack."); return; }
    if (!window.PublicKeyCredential) { showProblem("This browser does not support passkeys."); return; }
    try {
      start = await post("/passkey/begin", { token: token });
    } catch (e) {
      intro.textContent = "";
      showProblem(e.message);
      return;
    }
    if (start.purpose === "enrol") {
      title.textContent = "Register your passkey";
      intro.textContent = "You will confirm approvals with this passkey.";
      button.textContent = "Register a passkey";
    } else if (start.purpose === "break_glass") {
      title.textContent = "Confirm break-glass access";
      intro.textContent = "You are taking access without approval: it is announced to the team and reviewed afterwards. Nothing is issued until you confirm with your passkey.";
      button.textContent = "Take access with my passkey";
    } else {
      title.textContent = "Confirm your approval";
      intro.textContent = "You are approving this access request. It counts only once you confirm with your passkey.";
      button.textContent = "Approve with my passkey";
    }
    summary.innerHTML = start.summary_html;  // escaped by the bot
    button.hidden = false;
    button.addEventListener("click", confirm);
    button.focus();
  }

  load();
})();
