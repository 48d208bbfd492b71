/* Shared by every framed page: our API with the frame token, BX24 start-up and frame resizing.
   No cookies are used: the signed frame token in the page is the only credential. */
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('b24p-config').textContent);
  var B24P = window.B24P = {cfg: cfg};

  B24P.api = function (method, url, body, headers) {
    var options = {method: method, credentials: 'omit', cache: 'no-store',
                   headers: {'Authorization': 'Frame ' + cfg.token, 'Accept': 'application/json'}};
    Object.keys(headers || {}).forEach(function (name) { options.headers[name] = headers[name]; });
    if (body !== undefined) { options.headers['Content-Type'] = 'application/json'; options.body = JSON.stringify(body); }
    return fetch(url, options).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) { return {ok: r.ok, status: r.status, data: data}; });
    }, function () { return {ok: false, status: 0, data: {detail: 'network error'}}; });
  };

  // A fresh Idempotency-Key: one per submission, sent again unchanged when that submission is retried, so
  // the server answers a repeat with the first message instead of sending a second SMS.
  B24P.newKey = function () {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  };

  B24P.errorText = function (data) {
    if (!data) return '';
    if (typeof data.detail === 'string') return data.detail;
    return Object.keys(data).map(function (k) { var v = data[k]; return k + ': ' + (Array.isArray(v) ? v.join(' ') : v); }).join('; ');
  };

  B24P.date = function (iso) {
    if (!iso) return '';
    var d = new Date(iso);
    return d.toLocaleString(cfg.lang === 'ru' ? 'ru-RU' : 'en-GB', {day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit'});
  };

  var started = false;
  B24P.ready = function (callback) {
    // BX24.init waits for the parent frame's handshake; outside Bitrix24 (no SDK) just run.
    if (window.BX24 && typeof BX24.init === 'function') { BX24.init(function () { started = true; callback(); }); }
    else { callback(); }
  };

  B24P.fit = function () {
    if (!started || !window.BX24 || typeof BX24.resizeWindow !== 'function') return;
    BX24.resizeWindow(document.documentElement.scrollWidth, document.body.scrollHeight + 24);
  };
})();
