/* The sandbox's BX24 SDK: what b24portal's frames use of Bitrix24's JS SDK, over postMessage to the
   sandbox page that holds the frame (sandbox.js answers), as the real SDK talks to the real portal page. */
(function () {
  'use strict';
  if (window.BX24) return;
  var seq = 0, pending = {}, auth = null, info = {placement: '', options: {}}, ready = false, waiting = [];

  function send(method, args, callback) {
    var id = ++seq;
    if (callback) pending[id] = callback;
    window.parent.postMessage({sandboxBx24: true, id: id, method: method, args: args || []}, '*');
  }
  window.addEventListener('message', function (event) {
    var data = event.data;
    if (event.source !== window.parent || !data || !data.sandboxBx24Reply) return;
    var callback = pending[data.id];
    delete pending[data.id];
    if (callback) callback(data.result);
  });
  function size() {
    return {scrollWidth: document.documentElement.scrollWidth,
            scrollHeight: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)};
  }
  function result(answer) {
    answer = answer || {};
    return {
      answer: answer,
      data: function () { return answer.result; },
      error: function () { return answer.error ? {ex: answer, status: answer.status} : null; },
      more: function () { return false; },
      total: function () { return answer.total || 0; }
    };
  }

  window.BX24 = {
    sandbox: true,
    init: function (callback) {
      if (ready) { if (callback) setTimeout(callback, 0); return; }
      if (callback) waiting.push(callback);
      if (waiting.length > 1) return;
      send('init', [], function (r) {
        auth = r.auth; info = r.placement || info; ready = true;
        var list = waiting; waiting = [];
        list.forEach(function (cb) { cb(); });
      });
    },
    ready: function (callback) { window.BX24.init(callback); },
    isAdmin: function () { return !!(auth && auth.is_admin); },
    getAuth: function () {
      return auth ? {access_token: auth.access_token, refresh_token: auth.refresh_token,
                     expires_in: auth.expires_in, domain: auth.domain, member_id: auth.member_id} : false;
    },
    refreshAuth: function (callback) { send('refreshAuth', [], function (r) { auth = r.auth; if (callback) callback(window.BX24.getAuth()); }); },
    getDomain: function () { return auth ? auth.domain : ''; },
    getLang: function () { return auth ? auth.lang : 'en'; },
    installFinish: function () { send('installFinish', []); },
    resizeWindow: function (width, height, callback) { send('resizeWindow', [width, height], callback); },
    fitWindow: function (callback) { var s = size(); send('resizeWindow', [s.scrollWidth, s.scrollHeight], callback); },
    getScrollSize: size,
    openApplication: function (params, callback) { send('openApplication', [params || {}], callback); },
    closeApplication: function (callback) { send('closeApplication', [], callback); },
    reloadWindow: function () { window.location.reload(); },
    callMethod: function (method, params, callback) {
      send('callMethod', [method, params || {}], function (r) { if (callback) callback(result(r)); });
    },
    callBatch: function (calls, callback) {
      send('callBatch', [calls], function (r) { if (callback) callback(r); });
    },
    placement: {
      info: function () { return info; },
      call: function (command, value, callback) { send('placement.call', [command, value], callback); },
      getInterface: function (callback) { if (callback) callback({command: ['setValue'], event: []}); },
      bindEvent: function () {}
    }
  };
})();
