// The log page: while an attempt runs, keep the newest lines in view, unless
// the reader has scrolled up to read something.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !log.hasAttribute("data-follow")) return;
  var isAtEnd = true;
  log.scrollTop = log.scrollHeight;
  document.body.addEventListener("htmx:beforeSwap", function () {
    isAtEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    if (isAtEnd) log.scrollTop = log.scrollHeight;
  });
})();
