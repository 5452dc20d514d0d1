// Redraw every Plotly chart at the width of its container once the page is laid
// out: a chart drawn while the page is still parsed takes the width it found then.
window.addEventListener("load", function () {
  if (!window.Plotly) {
    return;
  }
  document.querySelectorAll(".js-plotly-plot").forEach(function (chart) {
    window.Plotly.Plots.resize(chart);
  });
});
