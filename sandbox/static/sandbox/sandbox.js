/* The sandbox page side of Bitrix24: opens b24portal's frames with the POST fields Bitrix24 sends, and
   answers their BX24 SDK calls (bx24.js posts them here). */
(function () {
  'use strict';
  var csrf = (document.querySelector('meta[name=csrf-token]') || {}).content || '';
  var frames = [];

  function post(url, data) {
    return fetch(url, {method: 'POST', credentials: 'same-origin', headers: {'X-CSRFToken': csrf},
                       body: new URLSearchParams(data || {})})
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (j) { return {ok: r.ok, status: r.status, data: j}; }); });
  }

  function openFrame(iframe, request, context) {
    return post('/sandbox/frame/', request).then(function (r) {
      if (!r.ok) throw new Error(r.data.error || ('HTTP ' + r.status));
      if (!iframe.name) iframe.name = 'sbx' + Math.random().toString(36).slice(2);
      var form = document.createElement('form');
      form.method = 'post'; form.target = iframe.name; form.action = r.data.action; form.style.display = 'none';
      Object.keys(r.data.fields).forEach(function (key) {
        var input = document.createElement('input');
        input.type = 'hidden'; input.name = key; input.value = r.data.fields[key];
        form.appendChild(input);
      });
      document.body.appendChild(form);
      frames = frames.filter(function (f) { return f.iframe !== iframe && document.body.contains(f.iframe); });
      frames.push({iframe: iframe, fields: r.data.fields, context: context || {}});
      form.submit();
      form.remove();
      return r.data;
    });
  }

  function authOf(fields) {
    var options = {};
    try { options = JSON.parse(fields.PLACEMENT_OPTIONS || '{}'); } catch (e) { options = {}; }
    return {auth: {access_token: fields.AUTH_ID, refresh_token: fields.REFRESH_ID, expires_in: fields.AUTH_EXPIRES,
                   domain: window.location.host, member_id: fields.member_id, lang: 'en', is_admin: true},
            placement: {placement: fields.PLACEMENT || 'DEFAULT', options: options}};
  }

  function handle(frame, method, args) {
    var fields = frame.fields;
    switch (method) {
      case 'init':
      case 'refreshAuth':
        return Promise.resolve(authOf(fields));
      case 'installFinish':
        return post('/sandbox/bx24/', {method: 'installFinish'}).then(function (r) {
          document.dispatchEvent(new CustomEvent('sandbox:installed', {detail: r.data}));
          return r.data;
        });
      case 'resizeWindow':
        var height = Math.max(60, Math.min(2400, parseInt(args[1], 10) || 0));
        frame.iframe.style.height = height + 'px';
        return Promise.resolve({});
      case 'placement.call':
        if (args[0] !== 'setValue' || !frame.context.entity) return Promise.resolve({});
        var value = Array.isArray(args[1]) ? args[1].join(', ') : String(args[1] == null ? '' : args[1]);
        return post('/sandbox/bx24/', {method: 'setValue', entity: frame.context.entity, id: frame.context.id,
                                       value: value}).then(function (r) {
          document.dispatchEvent(new CustomEvent('sandbox:value', {detail: value}));
          return r.data;
        });
      case 'openApplication':
        Sandbox.openSlider({kind: 'app'}, 'b24portal', {});
        return Promise.resolve({});
      case 'closeApplication':
        Sandbox.closeSlider();
        return Promise.resolve({});
      case 'callMethod':
        return fetch('/rest/' + encodeURIComponent(String(args[0])) + '.json', {
          method: 'POST', headers: {'Content-Type': 'application/json'},
          body: JSON.stringify(Object.assign({}, args[1] || {}, {auth: fields.AUTH_ID}))
        }).then(function (r) { return r.json().then(function (j) { j.status = r.status; return j; }); });
      default:
        return Promise.resolve({error: 'not in the sandbox BX24 SDK: ' + method});
    }
  }

  window.addEventListener('message', function (event) {
    var data = event.data;
    if (!data || !data.sandboxBx24) return;
    var frame = frames.find(function (f) { return f.iframe.contentWindow === event.source; });
    if (!frame) return;
    function reply(result) { event.source.postMessage({sandboxBx24Reply: true, id: data.id, result: result}, '*'); }
    handle(frame, data.method, data.args).then(reply, function (e) { reply({error: String(e)}); });
  });

  function closeSlider() {
    var panel = document.getElementById('slider');
    if (panel) panel.remove();
    document.dispatchEvent(new CustomEvent('sandbox:slider-closed'));
  }

  function openSlider(request, title, context) {
    closeSlider();
    var panel = document.createElement('div');
    panel.id = 'slider';
    panel.innerHTML = '<div class="slider-overlay"></div><div class="slider-panel"><button class="slider-close" ' +
      'title="Close">×</button><div class="slider-title"></div><iframe id="slider-frame" name="slider-frame"></iframe>' +
      '<p class="error" hidden></p></div>';
    panel.querySelector('.slider-title').textContent = title;
    panel.querySelector('.slider-close').addEventListener('click', closeSlider);
    panel.querySelector('.slider-overlay').addEventListener('click', closeSlider);
    document.body.appendChild(panel);
    var iframe = panel.querySelector('iframe');
    return openFrame(iframe, request, context).catch(function (e) {
      var p = panel.querySelector('.error'); p.hidden = false; p.textContent = e.message;
    });
  }

  window.Sandbox = {post: post, openFrame: openFrame, openSlider: openSlider, closeSlider: closeSlider};

  var reset = document.getElementById('reset');
  if (reset) reset.addEventListener('click', function () {
    if (!window.confirm('Start over? b24portal is uninstalled from this sandbox (ONAPPUNINSTALL) and a new portal starts.')) return;
    post('/sandbox/reset/', {}).then(function () { window.location.href = '/sandbox/'; });
  });
})();
