element.addEventListener('click', (event) => {
  const figure = event.target.closest('[data-latent], [data-item]');
  if (!figure) return;
  const number = (value) => (value === undefined ? null : Number(value));
  trigger('click', {latent: number(figure.dataset.latent), item: number(figure.dataset.item)});
});
