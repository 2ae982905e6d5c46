// Runs in a gr.HTML beside a gr.Plot (whose element id replaces __PLOT_ID__): a click on a point
// or bar of that plot fires this component's 'click' event with the point's customdata under
// the key that replaces __KEY__ (a number, or a list of numbers when the customdata is a list:
// a histogram bar's range). gr.Plot reports no clicks itself; the plot is redrawn on every
// update, so the handler is (re)attached to whatever Plotly graph the plot holds, once per graph.
const plotId = __PLOT_ID__;
const key = __KEY__;
const onClick = (data) => {
  const point = data && data.points && data.points[0];
  const value = point && point.customdata;
  if (value === undefined || value === null) return;
  const many = Array.isArray(value) || ArrayBuffer.isView(value);  // typed arrays too
  trigger('click', {[key]: many ? Array.from(value, Number) : Number(value)});
};
const hook = () => {
  const root = document.getElementById(plotId);
  if (!root) return;
  root.querySelectorAll('.js-plotly-plot').forEach((graph) => {
    if (typeof graph.on !== 'function') return;
    graph.removeListener('plotly_click', onClick);  // a redraw may keep the graph: one handler
    graph.on('plotly_click', onClick);
  });
};
let timer = null;
new MutationObserver(() => {
  clearTimeout(timer);
  timer = setTimeout(hook, 50);
}).observe(document.body, {subtree: true, childList: true});
hook();
