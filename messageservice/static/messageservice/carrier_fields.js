// Provider account admin: show only the credential inputs of the selected carrier.
(function () {
  function sync() {
    var select = document.getElementById('id_carrier');
    var kind = select ? select.value : '';
    document.querySelectorAll('fieldset.carrier-credentials').forEach(function (fs) {
      fs.style.display = fs.classList.contains('carrier-' + kind) ? '' : 'none';
    });
  }
  document.addEventListener('DOMContentLoaded', function () {
    var select = document.getElementById('id_carrier');
    if (select) select.addEventListener('change', sync);
    sync();
  });
})();
