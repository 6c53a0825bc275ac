'use strict';
// The status page's buttons and refresh. No library and nothing fetched
// from elsewhere: the page must work on an isolated admin network.
(() => {
  const REFRESH_MS = 5000;
  const ABOUT = {
    reset: ['Reset', 'Closes the breaker now: sends flow at full rate at once.'],
    release: ['Release', 'Starts the ramp now: a probe first, then rising rates.'],
    trip: ['Hold', 'Refuses every send of the number until an operator releases it, or for the time given.'],
  };

  // The admin token lives in this variable only: never in storage or a
  // cookie, so closing or reloading the tab forgets it.
  let token = null;
  let pending = null; // {number, action} of the open dialog

  const $ = (id) => document.getElementById(id);
  const dialog = $('act');
  const form = $('act-form');
  const notice = $('notice');

  function say(text, isError) {
    notice.textContent = text;
    notice.classList.toggle('error', Boolean(isError));
  }

  function open(number, action) {
    pending = { number, action };
    const [label, about] = ABOUT[action];
    $('act-title').textContent = `${label} ${number}?`;
    $('act-about').textContent = about;
    $('act-submit').textContent = label;
    $('ttl-field').hidden = action !== 'trip';
    $('ttl').value = '';
    $('reason').value = '';
    showError('');
    askToken();
    dialog.showModal();
    (token === null ? $('token') : $('reason')).focus();
  }

  function askToken() {
    $('token-field').hidden = token !== null;
    $('token').value = '';
  }

  function showError(text) {
    $('act-error').textContent = text;
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === 'string') return body.error;
    } catch (_) {
      // Not JSON: the status says enough.
    }
    return `the gateway answered ${response.status}`;
  }

  async function submit() {
    if (pending === null) return;
    if (token === null) {
      const typed = $('token').value.trim();
      if (typed === '') {
        showError('the admin token is needed');
        $('token').focus();
        return;
      }
      token = typed;
    }
    const { number, action } = pending;
    const body = { reason: $('reason').value.trim() };
    const ttl = $('ttl').value.trim();
    if (action === 'trip' && ttl !== '') body.ttl = ttl;
    $('act-submit').disabled = true;
    let response;
    try {
      response = await fetch(`/admin/breakers/${encodeURIComponent(number)}/${action}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      showError(`the gateway did not answer: ${e.message}`);
      return;
    } finally {
      $('act-submit').disabled = false;
    }
    if (response.ok) {
      const answer = await response.json().catch(() => ({}));
      dialog.close();
      pending = null;
      const outcome = answer.outcome || 'done';
      say(`${ABOUT[action][0]} ${number}: ${outcome}${answer.closed ? ', now closed' : ''}`, false);
      refresh();
      return;
    }
    const message = await errorOf(response);
    if (response.status === 401) {
      // A wrong or revoked token: forget it and ask again.
      token = null;
      askToken();
      $('token').focus();
    }
    showError(message);
  }

  async function refresh() {
    try {
      const response = await fetch('/', { cache: 'no-store', credentials: 'omit' });
      if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
      const fresh = new DOMParser()
        .parseFromString(await response.text(), 'text/html')
        .getElementById('status');
      if (fresh === null) throw new Error('the answer has no status');
      $('status').replaceWith(document.importNode(fresh, true));
      if (notice.dataset.stale) {
        delete notice.dataset.stale;
        say('', false);
      }
    } catch (e) {
      notice.dataset.stale = '1';
      say(`refresh failed (${e.message}); the table shows an older state`, true);
    }
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (button !== null && ABOUT[button.dataset.action]) {
      open(button.dataset.number, button.dataset.action);
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  $('act-cancel').addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => {
    pending = null;
    $('token').value = '';
  });
  setInterval(refresh, REFRESH_MS);
})();
