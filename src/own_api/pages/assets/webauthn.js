// Wardgate's WebAuthn step: the only script the gateway serves, from itself (CSP script-src
// 'self'; nothing inline). A page with a passkey button carries, as data attributes, where to
// open the ceremony (data-start), which id to send (data-field, data-value; none when the
// session says who it is) and whether it
// registers (data-kind="create") or signs in (data-kind="get"). The script asks the server for
// the options, lets the browser talk to the authenticator, and posts the answer with the page's
// hidden form (CSRF token included): the server verifies it and answers with the next page.
'use strict';

(function () {
  const button = document.getElementById('webauthn-button');
  const form = document.getElementById('webauthn-form');
  const status = document.getElementById('webauthn-status');
  if (!button || !form || !status) return;
  if (!window.PublicKeyCredential || !navigator.credentials) {
    status.textContent = 'This browser cannot use passkeys here; use another way below.';
    button.disabled = true;
    return;
  }

  function fromBase64url(text) {
    const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
  }

  function toBase64url(buffer) {
    let binary = '';
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  // The server's options carry binary fields as base64url; the browser wants buffers.
  function decodeOptions(kind, options) {
    const publicKey = options.publicKey;
    publicKey.challenge = fromBase64url(publicKey.challenge);
    const listed = kind === 'create' ? publicKey.excludeCredentials : publicKey.allowCredentials;
    (listed || []).forEach((credential) => {
      credential.id = fromBase64url(credential.id);
    });
    if (kind === 'create') publicKey.user.id = fromBase64url(publicKey.user.id);
    return { publicKey };
  }

  // The browser's answer, as the JSON the server reads (the shape of credential.toJSON()).
  function encodeCredential(credential) {
    const response = credential.response;
    const encoded = { clientDataJSON: toBase64url(response.clientDataJSON) };
    if (response.attestationObject) {
      encoded.attestationObject = toBase64url(response.attestationObject);
      if (response.getTransports) encoded.transports = response.getTransports();
    } else {
      encoded.authenticatorData = toBase64url(response.authenticatorData);
      encoded.signature = toBase64url(response.signature);
      if (response.userHandle) encoded.userHandle = toBase64url(response.userHandle);
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: encoded,
      extensions: credential.getClientExtensionResults(),
    };
  }

  async function ceremony() {
    const kind = button.dataset.kind;
    const started = await fetch(button.dataset.start, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify(button.dataset.field ? { [button.dataset.field]: button.dataset.value } : {}),
    });
    if (!started.ok) throw new Error('start refused');
    const answer = await started.json();
    const options = decodeOptions(kind, answer.options);
    const credential = kind === 'create'
      ? await navigator.credentials.create(options)
      : await navigator.credentials.get(options);
    form.elements.ceremony.value = answer.ceremony;
    form.elements.credential.value = JSON.stringify(encodeCredential(credential));
    form.submit();
  }

  button.addEventListener('click', () => {
    button.disabled = true;
    status.textContent = 'Follow your browser\u2019s prompt to use your passkey or security key\u2026';
    ceremony().catch(() => {
      status.textContent = 'The passkey was not used. Try again, or use another way below.';
      button.disabled = false;
    });
  });
})();
