() => {
  // Keeps the address bar on what the page shows, one history entry per change; Back and
  // Forward reopen the entry's link through a hidden button. Runs once per page.
  if (window.saeAddress) return;
  const panels = __PANELS__;        // tab id -> element id of its panel
  const backId = __BACK_ID__;       // the hidden button reopening location.search
  const linkClass = __LINK_CLASS__; // links the server writes into each tab's description

  // What a link shows: its tab and subject, whatever the order or spelling of its parameters.
  const subject = (search) => {
    const p = new URLSearchParams(search);
    const tab = p.get('tab') || (p.has('latent') ? 'latent' : 'inspect');
    return JSON.stringify([tab, p.get('latent'), p.get('text'), p.get('item')]);
  };
  const shownLink = () => {
    for (const [tab, id] of Object.entries(panels)) {
      const panel = document.getElementById(id);
      if (!panel || panel.offsetParent === null) continue;  // hidden: not the selected tab
      const a = panel.querySelector('a.' + linkClass);
      return a ? a.getAttribute('href') : '?tab=' + tab;
    }
    return null;
  };
  // After Back / Forward, until the view of the address returned to is shown (several may be
  // on their way after quick presses), the old view is not a new entry.
  let reopening = false;
  let giveUp = null;
  const follow = (replace = false) => {
    const link = shownLink();
    if (!link) return;
    const same = subject(link) === subject(window.location.search);
    if (reopening) {
      reopening = !same;
      return;
    }
    if (same) return;
    if (replace) window.history.replaceState({saeExplorer: true}, '', link);
    else window.history.pushState({saeExplorer: true}, '', link);
  };
  let timer = null;
  new MutationObserver(() => {
    clearTimeout(timer);
    timer = setTimeout(() => follow(), 80);
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  window.addEventListener('popstate', () => {
    reopening = true;
    clearTimeout(giveUp);  // an address that cannot be shown must not stop the page for good
    giveUp = setTimeout(() => { reopening = false; }, 15000);
    document.getElementById(backId).click();
  });
  window.saeAddress = {settled: () => follow()};
  follow(true);  // a link that could not be shown gives way to what is shown, in its place
}
