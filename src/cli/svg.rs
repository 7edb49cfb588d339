//! Pictures, as SVG files (plotters' SVG backend, no system library): the
//! address-space map and the plot of a simulation.

use super::map::{AddressMap, short_of_name};
use hostmem::host::{MemoryAvailable, MemoryCriticalLevel};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const RESERVED: RGBColor = RGBColor(226, 226, 226);
const MAPPED: RGBColor = RGBColor(196, 178, 140);
const GRID: RGBColor = RGBColor(150, 150, 150);
const COMMITTED: RGBColor = RGBColor(31, 119, 180);
const COUNTED: RGBColor = RGBColor(140, 190, 230);
const RESERVED_LINE: RGBColor = RGBColor(118, 42, 131);
const TASK: RGBColor = RGBColor(255, 127, 14);
const APP_DOMAIN: RGBColor = RGBColor(214, 39, 40);
const PROCESS: RGBColor = RGBColor(110, 0, 0);
const LOW: RGBColor = RGBColor(214, 39, 40);
const NEUTRAL: RGBColor = RGBColor(230, 171, 2);
const HIGH: RGBColor = RGBColor(44, 160, 44);

/// The colour of committed pages of a protection (`RW`, `RX`, …).
fn protection_colour(short: &str) -> RGBColor {
    match short {
        "RW" => RGBColor(66, 133, 244),
        "RX" => RGBColor(255, 140, 0),
        "RWX" => RGBColor(219, 40, 40),
        "R" => RGBColor(15, 157, 88),
        "X" => RGBColor(156, 39, 176),
        "NA" => RGBColor(50, 50, 50),
        _ => RGBColor(0, 0, 0),
    }
}

fn err(path: &Path) -> impl Fn(String) -> String + '_ {
    move |e| format!("{}: cannot draw: {e}", path.display())
}

const MAX_ROWS: usize = 160;

/// Every protection a committed run can have, in the legend's order, with
/// its short name (`super::map::short_of_name`).
const PROTECTIONS: [(&str, &str); 6] = [
    ("RW", "PAGE_READWRITE"),
    ("R", "PAGE_READONLY"),
    ("RX", "PAGE_EXECUTE_READ"),
    ("RWX", "PAGE_EXECUTE_READWRITE"),
    ("X", "PAGE_EXECUTE"),
    ("NA", "PAGE_NOACCESS"),
];

/// The smallest size the size axis shows: one page.
const AXIS_MIN: u64 = 4096;

/// Where a bar of `size` bytes ends, in pixels from the bar's start, on a
/// log scale from one page (`min_px`) to `max` bytes (`width`).
fn log_length(size: u64, max: u64, width: i32, min_px: i32) -> i32 {
    let span = (max.max(AXIS_MIN * 2) as f64 / AXIS_MIN as f64).log2();
    let at = (size.max(AXIS_MIN) as f64 / AXIS_MIN as f64).log2();
    min_px + ((width - min_px) as f64 * at / span).round() as i32
}

/// Draws `map` to `path`: one bar a reservation, in the text table's order
/// (reservations by address, then the runtime's own mappings). A bar's
/// length is its size on a log scale (the axis above the bars), so a
/// 28 KiB reservation is visibly shorter than a 256 MiB one; inside a bar
/// the pages are in address order, reserved pages grey and committed runs
/// coloured by protection, each at least 2 pixels wide so small runs stay
/// visible. The legend lists only the protections that occur.
pub fn map_svg(map: &AddressMap, title: &str, path: &Path) -> Result<(), String> {
    enum Row<'a> {
        Reservation(&'a super::map::MapReservation),
        Mapping(&'a super::map::MapMapping),
    }
    let mut rows: Vec<Row> = map
        .reservations
        .iter()
        .map(Row::Reservation)
        .chain(map.mappings.iter().map(Row::Mapping))
        .collect();
    let hidden = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);
    let largest = map
        .reservations
        .iter()
        .map(|r| r.size)
        .chain(map.mappings.iter().map(|m| m.size))
        .max()
        .unwrap_or(AXIS_MIN);
    // The protections that occur, in the legend's order.
    let occurring: Vec<(&str, &str)> = PROTECTIONS
        .into_iter()
        .filter(|(short, _)| {
            map.reservations.iter().any(|r| {
                r.regions
                    .iter()
                    .any(|g| g.state == "MEM_COMMIT" && short_of_name(&g.protect) == *short)
            })
        })
        .collect();

    let (width, row_h, top, label_w) = (1200i32, 20i32, 124i32, 470i32);
    let height = top + row_h * rows.len().max(1) as i32 + 40;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let e = err(path);
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let font = |size: u32| ("sans-serif", size).into_font();
    let mono = |size: u32| ("monospace", size).into_font();
    let text = |s: String, at: (i32, i32), style: TextStyle| {
        root.draw(&Text::new(s, at, style))
            .map_err(|x| e(x.to_string()))
    };
    text(title.to_owned(), (12, 10), font(20).into())?;
    text(
        format!(
            "{}, {} committed of {} reserved; {}",
            super::count(map.reservations.len() as u64, "reservation"),
            super::units::bytes(map.committed()),
            super::units::bytes(map.reserved()),
            super::count(map.mappings.len() as u64, "runtime mapping")
        ),
        (12, 36),
        font(13).color(&GRID),
    )?;
    // Legend: what occurs.
    let mut legend = vec![("reserved".to_owned(), RESERVED)];
    legend.extend(
        occurring
            .iter()
            .map(|(short, name)| (format!("committed {name}"), protection_colour(short))),
    );
    if !map.mappings.is_empty() {
        legend.push(("runtime mapping (not hostmem's)".to_owned(), MAPPED));
    }
    let mut x = 12;
    for (name, colour) in &legend {
        root.draw(&Rectangle::new([(x, 58), (x + 14, 72)], colour.filled()))
            .map_err(|x| e(x.to_string()))?;
        text(name.clone(), (x + 18, 59), font(12).into())?;
        x += 30 + 7 * name.len() as i32;
    }
    // The size axis, above the bars.
    let bar_x0 = label_w;
    // Room on the right for the last size label.
    let bar_w = width - bar_x0 - 36;
    let min_px = 6;
    text(
        "bar length: size, log scale; inside a bar: pages in address order".to_owned(),
        (bar_x0, 82),
        font(12).color(&GRID),
    )?;
    let mut tick = AXIS_MIN;
    while tick <= largest {
        let x = bar_x0 + log_length(tick, largest, bar_w, min_px);
        root.draw(&PathElement::new(vec![(x, 112), (x, 118)], GRID))
            .map_err(|x| e(x.to_string()))?;
        let label = TextStyle::from(font(11)).pos(Pos::new(HPos::Center, VPos::Top));
        text(
            super::units::bytes(tick).replace(".0 ", " "),
            (x, 99),
            label,
        )?;
        tick *= 16;
    }
    root.draw(&PathElement::new(
        vec![(bar_x0, 118), (bar_x0 + bar_w, 118)],
        GRID,
    ))
    .map_err(|x| e(x.to_string()))?;
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as i32 * row_h;
        let (name, base, size, owner) = match row {
            Row::Reservation(r) => (&r.name, r.base, r.size, &r.owner),
            Row::Mapping(m) => (&m.name, m.base, m.size, &m.owner),
        };
        // Columns at fixed places (SVG collapses runs of spaces).
        let right = TextStyle::from(mono(12)).pos(Pos::new(HPos::Right, VPos::Top));
        text(
            name.clone().unwrap_or_default(),
            (8, y + 4),
            mono(12).into(),
        )?;
        text(format!("{base:#x}"), (44, y + 4), mono(12).into())?;
        text(super::units::bytes(size), (234, y + 4), right)?;
        text(owner.clone(), (244, y + 4), font(12).into())?;
        let (y0, y1) = (y + 3, y + row_h - 3);
        let length = log_length(size, largest, bar_w, min_px);
        let fill = match row {
            Row::Reservation(_) => RESERVED,
            Row::Mapping(_) => MAPPED,
        };
        root.draw(&Rectangle::new(
            [(bar_x0, y0), (bar_x0 + length, y1)],
            fill.filled(),
        ))
        .map_err(|x| e(x.to_string()))?;
        if let Row::Reservation(r) = row {
            let at = |addr: u64| {
                bar_x0 + ((addr - r.base) as f64 / size.max(1) as f64 * length as f64) as i32
            };
            for g in r.regions.iter().filter(|g| g.state == "MEM_COMMIT") {
                let (x0, x1) = (at(g.base), at(g.base + g.size));
                let colour = protection_colour(short_of_name(&g.protect));
                root.draw(&Rectangle::new(
                    [(x0, y0), (x1.max(x0 + 2), y1)],
                    colour.filled(),
                ))
                .map_err(|x| e(x.to_string()))?;
            }
        }
        root.draw(&Rectangle::new([(bar_x0, y0), (bar_x0 + length, y1)], GRID))
            .map_err(|x| e(x.to_string()))?;
    }
    if hidden > 0 {
        let y = top + rows.len() as i32 * row_h + 6;
        text(
            format!("… {hidden} more rows not drawn"),
            (8, y),
            font(12).into(),
        )?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

/// What a simulation plot shows.
pub struct PlotData {
    /// The title.
    pub title: String,
    /// Samples: seconds, committed, reserved, counted against the budget
    /// (committed and the runtime's own mappings).
    pub samples: Vec<(f64, u64, u64, u64)>,
    /// The budget.
    pub budget: u64,
    /// The limit of each critical level, bytes.
    pub limits: [u64; 3],
    /// The same limits, percent of the budget.
    pub limit_percent: [u32; 3],
    /// The `eMemoryAvailableLow` level (at or above it memory is low),
    /// bytes.
    pub low: u64,
    /// The same, percent of the budget.
    pub low_percent: u32,
    /// The `eMemoryAvailableHigh` level (at or below it memory is high),
    /// bytes.
    pub high: u64,
    /// The same, percent of the budget.
    pub high_percent: u32,
    /// Notifications: seconds, state.
    pub notifications: Vec<(f64, MemoryAvailable)>,
    /// Refusals: seconds, level.
    pub refusals: Vec<(f64, MemoryCriticalLevel)>,
}

const MIB: f64 = (1u64 << 20) as f64;

/// The committed bytes the samples show at `t` (the last sample before).
fn counted_at(samples: &[(f64, u64, u64, u64)], t: f64) -> f64 {
    let i = samples.partition_point(|s| s.0 <= t);
    samples
        .get(i.saturating_sub(1))
        .map_or(0.0, |s| s.3 as f64 / MIB)
}

/// A tick label: the shortest decimal that names the value (to a
/// millionth), no trailing zeros ("250", "0.5", "0.002" for a short run).
fn tick(v: &f64) -> String {
    let rounded = (v * 1e6).round() / 1e6;
    if rounded == 0.0 {
        "0".to_owned()
    } else {
        format!("{rounded}")
    }
}

type Area<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;
type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The left margin of every chart, so that their time axes line up.
const Y_LABELS: u32 = 70;

/// A chart of MiB over `0..t_end` seconds on `area`, its mesh drawn.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    t_end: f64,
    y_max: f64,
) -> Result<TimeChart<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(Y_LABELS)
        .caption(caption, ("sans-serif", 15))
        .build_cartesian_2d(0f64..t_end, 0f64..y_max)
        .map_err(|x| x.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|x| x.to_string())?;
    Ok(chart)
}

/// How a legend entry's sample is drawn: as in the plot.
#[derive(Clone, Copy)]
enum Glyph {
    /// A solid line of this width.
    Line(RGBColor, u32),
    /// A dashed line: dash and gap, pixels.
    Dashed(RGBColor, u32, u32),
    /// A notification's mark: a short vertical line.
    Mark(RGBColor),
    /// A refusal's cross.
    Cross(RGBColor),
}

/// The notification lanes, top to bottom: state, colour, name.
const LANES: [(MemoryAvailable, RGBColor, &str); 3] = [
    (MemoryAvailable::Low, LOW, "Low"),
    (MemoryAvailable::Neutral, NEUTRAL, "Neutral"),
    (MemoryAvailable::High, HIGH, "High"),
];

/// Draws the plot to `path`. On the left, sharing one time axis: the
/// notifications, one lane a state (so that several at one moment stay
/// apart); committed bytes (and all bytes counted against the budget)
/// with the budget, the critical levels' limits, the notification levels
/// and the refusals as crosses; reserved bytes. On the right, the legend,
/// each sample drawn as in the plot, and what a refusal is.
pub fn plot_svg(data: &PlotData, path: &Path) -> Result<(), String> {
    let e = err(path);
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let root = root
        .titled(&data.title, ("sans-serif", 20))
        .map_err(|x| e(x.to_string()))?;
    let (left, panel) = root.split_horizontally(860);
    let (strip, rest) = left.split_vertically(130);
    let (upper, lower) = rest.split_vertically(460);
    let t_end = data
        .samples
        .last()
        .map_or(1.0, |s| s.0)
        .max(data.refusals.last().map_or(0.0, |r| r.0))
        .max(1e-3);
    let budget = data.budget as f64 / MIB;
    let peak = data
        .samples
        .iter()
        .map(|s| s.3.max(s.1) as f64 / MIB)
        .fold(0.0, f64::max);
    let y_max = budget.max(peak) * 1.08 + 1.0;
    let mut legend: Vec<(Glyph, String)> = Vec::new();

    // The notification lanes.
    let mut lanes = ChartBuilder::on(&strip)
        .margin(12)
        .x_label_area_size(0)
        .y_label_area_size(Y_LABELS)
        .caption("notifications delivered", ("sans-serif", 15))
        .build_cartesian_2d(0f64..t_end, -0.5f64..2.5f64)
        .map_err(|x| e(x.to_string()))?;
    lanes
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .y_labels(3)
        .y_label_style(("sans-serif", 12))
        .y_label_formatter(&|v| {
            let lane = v.round();
            if (v - lane).abs() > 1e-6 {
                return String::new();
            }
            match lane as i32 {
                2 => "Low".to_owned(),
                1 => "Neutral".to_owned(),
                0 => "High".to_owned(),
                _ => String::new(),
            }
        })
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (state, colour, name)) in LANES.into_iter().enumerate() {
        let lane = (2 - i) as f64;
        let times: Vec<f64> = data
            .notifications
            .iter()
            .filter(|n| n.1 == state)
            .map(|n| n.0)
            .collect();
        lanes
            .draw_series(times.iter().map(|&t| {
                PathElement::new(
                    vec![(t, lane - 0.32), (t, lane + 0.32)],
                    colour.stroke_width(2),
                )
            }))
            .map_err(|x| e(x.to_string()))?;
        legend.push((
            Glyph::Mark(colour),
            format!("eMemoryAvailable{name} delivered ({})", times.len()),
        ));
    }

    let mut chart =
        time_chart(&upper, "committed memory against the budget", t_end, y_max).map_err(&e)?;
    let hline = |y: f64| vec![(0.0, y), (t_end, y)];
    chart
        .draw_series(LineSeries::new(hline(budget), BLACK.stroke_width(2)))
        .map_err(|x| e(x.to_string()))?;
    legend.push((
        Glyph::Line(BLACK, 2),
        format!(
            "budget {} (the eProcessCritical limit)",
            super::units::bytes(data.budget)
        ),
    ));
    // The levels' limits; a notification level on the same line shares it.
    let low = data.low as f64 / MIB;
    let mut low_drawn = false;
    for (i, (colour, name)) in [(TASK, "eTaskCritical"), (APP_DOMAIN, "eAppDomainCritical")]
        .into_iter()
        .enumerate()
    {
        let y = data.limits[i] as f64 / MIB;
        if (y - budget).abs() <= f64::EPSILON {
            continue;
        }
        chart
            .draw_series(DashedLineSeries::new(
                hline(y),
                8,
                5,
                colour.stroke_width(2),
            ))
            .map_err(|x| e(x.to_string()))?;
        let mut label = format!("{} %: {name} limit", data.limit_percent[i]);
        if data.limits[i] == data.low {
            label += ",\nand the eMemoryAvailableLow level";
            low_drawn = true;
        }
        legend.push((Glyph::Dashed(colour, 8, 5), label));
    }
    if !low_drawn {
        chart
            .draw_series(DashedLineSeries::new(hline(low), 3, 4, LOW.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?;
        legend.push((
            Glyph::Dashed(LOW, 3, 4),
            format!("{} %: eMemoryAvailableLow level", data.low_percent),
        ));
    }
    let high = data.high as f64 / MIB;
    chart
        .draw_series(DashedLineSeries::new(
            hline(high),
            3,
            4,
            HIGH.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?;
    legend.push((
        Glyph::Dashed(HIGH, 3, 4),
        format!("{} %: eMemoryAvailableHigh level", data.high_percent),
    ));
    chart
        .draw_series(LineSeries::new(
            data.samples.iter().map(|s| (s.0, s.3 as f64 / MIB)),
            COUNTED.stroke_width(1),
        ))
        .map_err(|x| e(x.to_string()))?;
    legend.push((
        Glyph::Line(COUNTED, 1),
        "counted: committed + runtime mappings".to_owned(),
    ));
    chart
        .draw_series(LineSeries::new(
            data.samples.iter().map(|s| (s.0, s.1 as f64 / MIB)),
            COMMITTED.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?;
    legend.push((Glyph::Line(COMMITTED, 2), "committed".to_owned()));
    // Refusals: a cross each at the counted bytes of the moment (thinned
    // out evenly beyond 1,500 so the file stays small).
    let mut refused_any = false;
    for (level, colour, name) in [
        (MemoryCriticalLevel::TaskCritical, TASK, "eTaskCritical"),
        (
            MemoryCriticalLevel::AppDomainCritical,
            APP_DOMAIN,
            "eAppDomainCritical",
        ),
        (
            MemoryCriticalLevel::ProcessCritical,
            PROCESS,
            "eProcessCritical",
        ),
    ] {
        let times: Vec<f64> = data
            .refusals
            .iter()
            .filter(|r| r.1 == level)
            .map(|r| r.0)
            .collect();
        if times.is_empty() {
            continue;
        }
        refused_any = true;
        let every = times.len().div_ceil(1500);
        chart
            .draw_series(
                times.iter().step_by(every).map(|&t| {
                    Cross::new((t, counted_at(&data.samples, t)), 4, colour.stroke_width(1))
                }),
            )
            .map_err(|x| e(x.to_string()))?;
        legend.push((
            Glyph::Cross(colour),
            format!("refused at {name} ({})", times.len()),
        ));
    }

    let reserved_max = data
        .samples
        .iter()
        .map(|s| s.2 as f64 / MIB)
        .fold(0.0, f64::max)
        * 1.1
        + 1.0;
    let mut chart =
        time_chart(&lower, "reserved address space", t_end, reserved_max).map_err(&e)?;
    chart
        .draw_series(LineSeries::new(
            data.samples.iter().map(|s| (s.0, s.2 as f64 / MIB)),
            RESERVED_LINE.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?;
    legend.push((Glyph::Line(RESERVED_LINE, 2), "reserved".to_owned()));

    draw_legend(&panel, &legend, refused_any).map_err(&e)?;
    root.present().map_err(|x| e(x.to_string()))
}

/// The legend on its own panel, right of the charts: nothing covers the
/// curves.
fn draw_legend(
    panel: &Area<'_>,
    entries: &[(Glyph, String)],
    refusals: bool,
) -> Result<(), String> {
    let font = ("sans-serif", 12).into_font();
    let (x0, mut y) = (10i32, 40i32);
    let text = |s: &str, at: (i32, i32), style: &TextStyle| {
        panel
            .draw(&Text::new(s.to_owned(), at, style.clone()))
            .map_err(|x| x.to_string())
    };
    text("legend", (x0, 14), &("sans-serif", 15).into_font().into())?;
    for (glyph, label) in entries {
        let mid = y + 7;
        let sample = vec![(x0, mid), (x0 + 30, mid)];
        match *glyph {
            Glyph::Line(colour, width) => {
                panel.draw(&PathElement::new(sample, colour.stroke_width(width)))
            }
            Glyph::Dashed(colour, dash, gap) => {
                panel.draw(&plotters::element::DashedPathElement::new(
                    sample,
                    dash as i32,
                    gap as i32,
                    colour.stroke_width(2),
                ))
            }
            Glyph::Mark(colour) => panel.draw(&PathElement::new(
                vec![(x0 + 15, mid - 6), (x0 + 15, mid + 6)],
                colour.stroke_width(2),
            )),
            Glyph::Cross(colour) => {
                panel.draw(&Cross::new((x0 + 15, mid), 4, colour.stroke_width(1)))
            }
        }
        .map_err(|x| x.to_string())?;
        for line in label.lines() {
            text(line, (x0 + 40, y + 1), &font.clone().into())?;
            y += 16;
        }
        y += 6;
    }
    if refusals {
        y += 10;
        let note = [
            "A cross is a commit the budget refused:",
            "it would have taken the counted bytes past",
            "the limit of its request's critical level",
            "(E_OUTOFMEMORY to the simulated runtime).",
        ];
        for line in note {
            text(line, (x0, y), &font.clone().color(&GRID))?;
            y += 17;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn tick_labels_are_short_and_tell_ticks_apart() {
        assert_eq!(tick(&250.0), "250");
        assert_eq!(tick(&0.5), "0.5");
        assert_eq!(tick(&-0.0), "0");
        assert_eq!(tick(&(0.1 + 0.2)), "0.3");
        // A run of a hundredth of a second: its ticks must differ.
        let labels: Vec<String> = [0.0, 0.002, 0.004, 0.006].iter().map(tick).collect();
        assert_eq!(labels, ["0", "0.002", "0.004", "0.006"]);
    }
}
