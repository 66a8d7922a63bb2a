// The preference center's only script of its own: after htmx swaps in a new step or card, move the
// keyboard and screen-reader focus to its heading, so the page reads on from where the change happened.
document.addEventListener("htmx:afterSwap", function (event) {
  var target = document.getElementById(event.detail.target.id) || event.detail.target;
  var focus = target && (target.querySelector("[data-focus]") || target.querySelector("[role=status]"));
  if (focus) {
    if (!focus.hasAttribute("tabindex")) focus.setAttribute("tabindex", "-1");
    focus.focus();
  }
});

// htmx leaves error answers unswapped; a full page load instead shows the friendly page that
// explains them (session ended, form expired, gateway unavailable) with working links.
function reloadInFull() { window.location.reload(); }
document.addEventListener("htmx:responseError", reloadInFull);
document.addEventListener("htmx:sendError", reloadInFull);
